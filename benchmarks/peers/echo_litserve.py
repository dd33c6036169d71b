"""The same endpoint with LitServe (``python echo_litserve.py PORT``), at /predict."""

import sys

import litserve as ls


class EchoAPI(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["text"]

    def predict(self, text):
        return text

    def encode_response(self, text):
        return {"text": text}


if __name__ == "__main__":
    ls.LitServer(EchoAPI(), accelerator="cpu", workers_per_device=1).run(
        port=int(sys.argv[1]), generate_client_file=False
    )
