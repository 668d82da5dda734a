"""Project-started Triton Inference Server (CPU, Python backend). See infra/README.md."""

from .server import TritonServer, TritonSetupError, default_cache_dir, ensure_env, pytriton_dir, triton_url_or_start

__all__ = ["TritonServer", "TritonSetupError", "default_cache_dir", "ensure_env", "pytriton_dir",
           "triton_url_or_start"]
