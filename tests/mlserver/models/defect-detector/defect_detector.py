"""A stand-in for a Triton model, served by MLServer in the tests: it sums the scores it is sent."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class DefectDetector(MLModel):
    """One FP32 input `scores` of any length in, one FP32 output `total` of shape [1] (their sum) out."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        total = float(NumpyCodec.decode_input(payload.inputs[0]).sum())
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[ResponseOutput(name="total", datatype="FP32", shape=[1], data=[total])])
