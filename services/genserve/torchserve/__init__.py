"""genserve's text and latent models as TorchServe model archives (`genserve export torchserve`)."""
