"""Trivial python-backend model: LENGTH = number of characters of TEXT (UTF-8 decoded)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            lengths = np.array([[len(v.decode("utf-8", errors="replace"))] for v in text.reshape(-1)], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LENGTH", lengths)]))
        return responses
