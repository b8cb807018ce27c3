"""The vision service: ImageNet convnet backbones for DeepDream and neural style transfer."""
