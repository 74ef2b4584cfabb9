"""Diffusers pipeline directory -> ONNX graphs (+ TensorRT engines, Triton repository), parity checks and manifest."""
