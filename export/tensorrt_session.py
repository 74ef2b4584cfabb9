"""A TensorRT engine behind ONNX Runtime's call shape: `session.run(None, {name: array}) -> [arrays]`.

Buffers are torch CUDA tensors (torch is already a dependency), so no pycuda is needed; `run_torch`
takes and returns device tensors for callers that keep data on the GPU (the engine's I/O-binding path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.tensorrt_build import require_tensorrt


class TensorRTSession:
    def __init__(self, plan_path: Path, device: int = 0) -> None:
        import torch

        trt = require_tensorrt()
        self._torch = torch
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"cannot deserialize {plan_path}: built by another TensorRT version or GPU?")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n), trt) for n in names}

    def _torch_dtype(self, dtype, trt):
        t = self._torch
        return {trt.float32: t.float32, trt.float16: t.float16, trt.int64: t.int64, trt.int32: t.int32}[dtype]

    def run_torch(self, feed: dict) -> dict:
        """Device tensors in, device tensors out (no host copies)."""
        torch = self._torch
        keep = []
        for name in self.input_names:
            tensor = feed[name].to(self.device, self._dtypes[name]).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the log above)")
        stream.synchronize()
        return outputs

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        outputs = self.run_torch({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()})
        return [outputs[n].float().cpu().numpy() for n in (output_names or self.output_names)]
