// ChatApp: the chat-node service. Entry point: `ChatNode.main(environment:)`.
