"""``fal.toolkit.utils.setup_utils``: thread settings for ONNX Runtime (needs ``onnxruntime``)."""

from __future__ import annotations

from minifal.runner_contract import export_to_process


def patch_onnx_runtime(
    inter_op_num_threads: int = 16,
    intra_op_num_threads: int = 16,
    omp_num_threads: int = 16,
) -> None:
    """Make every new ONNX Runtime session use these thread counts (call before creating one)."""
    import onnxruntime as ort

    export_to_process({"OMP_NUM_THREADS": str(omp_num_threads)})  # OpenMP reads it
    defaults = ort.capi._pybind_state.get_default_session_options()

    def patched_default_session_options():
        defaults.inter_op_num_threads = inter_op_num_threads
        defaults.intra_op_num_threads = intra_op_num_threads
        return defaults

    ort.capi._pybind_state.get_default_session_options = patched_default_session_options


__all__ = ["patch_onnx_runtime"]
