import sys
from pathlib import Path

# The chat client of the chat-node tests (Tests/chat/chatkit.py) is reused here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chat"))
