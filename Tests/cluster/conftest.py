def pytest_configure(config):
    config.addinivalue_line("markers", "cluster_config(config): the config the `cluster` fixture starts with")
