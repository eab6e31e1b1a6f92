"""Models: architecture configs, the zoo, weight files and their key maps, the nn.Modules,
post-processing and reparameterisation. Pure: configuration in, tensors out.

    from rtdetr.models import create_model, list_models
    net = create_model("rtdetrv2_r18vd")       # an RTDETR nn.Module, random weights
"""
from rtdetr.models.config import BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig
from rtdetr.models.zoo import ZOO, create_model, get_config, get_entry, list_models

__all__ = ["ZOO", "BackboneConfig", "DecoderConfig", "EncoderConfig", "ModelConfig", "create_model", "get_config",
           "get_entry", "list_models"]
