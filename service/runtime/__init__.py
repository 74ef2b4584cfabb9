"""Backends that run the graph contract: PyTorch (reference), ONNX Runtime (CPU / CUDA), TensorRT."""

from service.runtime.base import BackboneInfo, Runtime
from service.runtime.loader import load_backbone_info, load_runtime

__all__ = ["BackboneInfo", "Runtime", "load_backbone_info", "load_runtime"]
