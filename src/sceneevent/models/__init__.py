"""The model: its configuration, network, log-mel feature extractor and losses. These files travel to the Hub
with every saved model folder (`trust_remote_code`), so they import only each other, torch, timm and transformers."""
