"""genserve: model-serving microservices for generative deep learning."""

__version__ = "0.1.0"
