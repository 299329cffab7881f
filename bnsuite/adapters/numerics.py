"""Reduced-precision float32 modes turned OFF, so GPU numbers compare with the float64 oracle: TF32 in torch's
matmuls and cuDNN convolutions, in TensorFlow, and JAX's default matmul precision. Each function applies the setting
and returns what it set, read back from the framework (the plugin records it in the results file's "env" record).

On the CPU none of these change a number (TF32 is a GPU tensor-core mode); they are set everywhere so a GPU run and a
CPU run state the same settings.
"""

from __future__ import annotations


def torch_full_fp32() -> dict:
    import torch

    backends = torch.backends
    if hasattr(backends, "fp32_precision"):  # the per-backend API (torch >= 2.9); never mixed with the legacy flags
        backends.fp32_precision = "ieee"
        backends.cuda.matmul.fp32_precision = "ieee"
        backends.cudnn.fp32_precision = "ieee"
        backends.cudnn.conv.fp32_precision = "ieee"
        backends.cudnn.rnn.fp32_precision = "ieee"
        return {"torch.backends.fp32_precision": backends.fp32_precision,
                "torch.backends.cuda.matmul.fp32_precision": backends.cuda.matmul.fp32_precision,
                "torch.backends.cudnn.conv.fp32_precision": backends.cudnn.conv.fp32_precision,
                "tf32": "off"}
    backends.cuda.matmul.allow_tf32 = False
    backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {"torch.backends.cuda.matmul.allow_tf32": backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": backends.cudnn.allow_tf32,
            "torch.float32_matmul_precision": torch.get_float32_matmul_precision(), "tf32": "off"}


def tensorflow_full_fp32() -> dict:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    on = tf.config.experimental.tensor_float_32_execution_enabled()
    return {"tf.config.experimental.tensor_float_32_execution_enabled": on, "tf32": "on" if on else "off"}


def jax_full_fp32() -> dict:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    value = jax.config.jax_default_matmul_precision
    return {"jax_default_matmul_precision": value, "tf32": "off" if value == "highest" else "on"}


class torch_cpu_backend_flags_kept:
    """torch's oneDNN and NNPACK flags put back after the block. torch.export switches both off on entry
    (torch/export/_trace.py: _ignore_backend_decomps) and, when the cuDNN call after them raises (the finding
    torch_export_fails_after_fp32_precision_ieee), never switches them back: every later CPU convolution of the
    process would run without oneDNN (finding torch_failed_export_leaves_onednn_disabled)."""

    def __enter__(self):
        import torch

        self.torch = torch
        # set_flags with every argument None changes nothing and returns oneDNN's four flags
        self.kept = (torch.backends.mkldnn.set_flags(None, None, None, None), torch._C._get_nnpack_enabled())
        return self

    def enabled_now(self) -> dict:
        """What the block left, before the flags are put back: {"oneDNN": bool, "NNPACK": bool}."""
        c = self.torch._C
        return {"oneDNN": bool(c._get_mkldnn_enabled()), "NNPACK": bool(c._get_nnpack_enabled())}

    def __exit__(self, *exc):
        self.torch.backends.mkldnn.set_flags(*self.kept[0])
        self.torch._C._set_nnpack_enabled(self.kept[1])
        return False
