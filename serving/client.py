"""Client of the zoo's servables, over gRPC (official tensorflow-serving-api stubs) or REST.

    from serving.client import ZooClient
    client = ZooClient("localhost", 8500, model="ganem")                 # gRPC
    client = ZooClient("localhost", 8501, model="ganem", protocol="rest")  # same interface
    client.classify(images)   # {"probabilities": [N, K], "cluster": [N], "embedding": [N, d]}
    client.cluster_probs(images), client.embed(images)   # [N, K], [N, d]
    client.sample(cluster=3, count=8, seed=0)   # [8, H, W, C], noise drawn on the server
    client.generate(noise, cluster)   # [N, H, W, C] from noise [N, latent_dim] and ids [N]
    client.metadata()         # servables, versions, signatures and their input shapes

The same names, arguments and outputs as the zoo's Keras models and `zoo.load(...)`.

Large inputs are sent in batches of `max_batch`; a call that fails with UNAVAILABLE
(server starting, restarting, unreachable) or RESOURCE_EXHAUSTED (every model call slot
busy) is retried with exponential backoff, any other error is raised at once as
`ServingClientError`.

Command line (works against `python -m serving.server` and `tensorflow_model_server`):

    python -m serving.client classify --host localhost --port 8500 --model ganem digit.png ...
    python -m serving.client generate --cluster 3 --count 16 --out samples.png
    python -m serving.client metadata
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from zoo.hub import cluster_ids  # noqa: E402

RETRIED = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
HTTP_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


class ServingClientError(Exception):
    """A request the server refused or could not answer; `code` is the gRPC status name."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class ZooClient:
    def __init__(self, host="localhost", port=8500, model="ganem", protocol="grpc", timeout=30.0, retries=3,
                 backoff=0.5, max_batch=256):
        if protocol not in ("grpc", "rest"):
            raise ValueError(f"protocol must be 'grpc' or 'rest', got {protocol!r}")
        self.host, self.port, self.model, self.protocol = host, int(port), model, protocol
        self.timeout, self.retries, self.backoff, self.max_batch = timeout, int(retries), backoff, int(max_batch)
        self.enet, self.generator = f"{model}_enet", f"{model}_generator"
        self._channel = self._stubs = None

    # -- transport -----------------------------------------------------------------------------
    def _grpc(self):
        if self._stubs is None:
            import grpc
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(f"{self.host}:{self.port}", options=[
                ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)])
            self._stubs = (prediction_service_pb2_grpc.PredictionServiceStub(self._channel),
                           model_service_pb2_grpc.ModelServiceStub(self._channel))
        return self._stubs

    def _with_retries(self, call):
        """Runs `call`; retries the transient codes only, with exponential backoff."""
        import grpc

        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as err:
                code = err.code().name
                if code not in RETRIED or attempt == self.retries:
                    raise ServingClientError(code, err.details()) from None
            except ServingClientError as err:
                if err.code not in RETRIED or attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2**attempt)

    def _predict(self, servable, signature, inputs):
        """One Predict call: numpy inputs -> numpy outputs."""
        if self.protocol == "rest":
            return self._with_retries(lambda: self._rest_predict(servable, signature, inputs))
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = servable, signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        response = self._with_retries(lambda: self._grpc()[0].Predict(request, timeout=self.timeout))
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def _rest(self, method, path, payload=None):
        url = f"http://{self.host}:{self.port}{path}"
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", err.reason)
            except (json.JSONDecodeError, ValueError):
                message = err.reason
            code = HTTP_CODES.get(err.code, "INTERNAL")
            raise ServingClientError(code, message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ServingClientError("UNAVAILABLE", str(getattr(err, "reason", err))) from None

    def _rest_predict(self, servable, signature, inputs):
        payload = {"signature_name": signature, "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}
        outputs = self._rest("POST", f"/v1/models/{servable}:predict", payload)["outputs"]
        return {k: np.asarray(v) for k, v in outputs.items()}

    def _batched(self, servable, signature, images):
        images = np.asarray(images, np.float32)
        parts = [self._predict(servable, signature, {"images": images[i:i + self.max_batch]})
                 for i in range(0, len(images), self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    # -- the interface ---------------------------------------------------------------------------
    def classify(self, images):
        """images [N, ...] in [0, 1] -> {"probabilities", "cluster", "embedding"}."""
        return self._batched(self.enet, "serving_default", images)

    def cluster_probs(self, images):
        return self.classify(images)["probabilities"]

    def embed(self, images):
        return self.classify(images)["embedding"]

    def sample(self, cluster, count=1, seed=0, scale=None):
        """`count` samples of `cluster` (an int, or one id per sample), noise drawn on the server
        from `seed`; `scale` (GM-GAN only) multiplies the latent spread."""
        inputs = {"cluster": cluster_ids(cluster, count), "seed": np.int64(seed)}
        if scale is not None:
            inputs["scale"] = np.float32(scale)
        return self._predict(self.generator, "sample", inputs)["images"]

    def generate(self, *args, **kwargs):
        """generate(noise, cluster): samples of noise [N, latent_dim] and cluster ids [N].
        The old generate(cluster, count, seed) still draws, with a DeprecationWarning: it is
        `sample` now."""
        if (args and np.ndim(args[0]) >= 2) or "noise" in kwargs:
            return self._generate(*args, **kwargs)
        warnings.warn("ZooClient.generate(cluster, count, seed) is now sample(cluster, count, seed); "
                      "generate(noise, cluster) takes the noise, as the zoo's models do", DeprecationWarning,
                      stacklevel=2)
        return self.sample(*args, **kwargs)

    def _generate(self, noise, cluster):
        inputs = {"noise": np.asarray(noise, np.float32), "cluster": np.asarray(cluster, np.int64)}
        return self._predict(self.generator, "serving_default", inputs)["images"]

    def metadata(self):
        """{servable: {"version", "signatures": {name: {"inputs": {key: shape}, "outputs": {key: shape}}}}};
        a shape is a list with -1 for any size, or None for an unknown rank (exports made
        before signatures declared their shapes)."""
        result = {}
        for servable in (self.enet, self.generator):
            if self.protocol == "rest":
                answer = self._with_retries(lambda: self._rest("GET", f"/v1/models/{servable}/metadata"))
                signatures = answer["metadata"]["signature_def"]["signature_def"]
                result[servable] = {"version": int(answer["model_spec"]["version"]), "signatures": {
                    name: {part: {k: _dims(v.get("tensorShape", {})) for k, v in sig.get(part, {}).items()}
                           for part in ("inputs", "outputs")} for name, sig in signatures.items()}}
                continue
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name = servable
            response = self._with_retries(lambda: self._grpc()[0].GetModelMetadata(request, timeout=self.timeout))
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            result[servable] = {"version": response.model_spec.version.value, "signatures": {
                name: {part: {k: None if v.tensor_shape.unknown_rank else [d.size for d in v.tensor_shape.dim]
                              for k, v in getattr(sig, part).items()} for part in ("inputs", "outputs")}
                for name, sig in signature_map.signature_def.items()}}
        return result

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stubs = None


def _dims(shape):
    if shape.get("unknownRank"):
        return None
    return [int(d.get("size", -1)) for d in shape.get("dim", [])]


# -- command line -----------------------------------------------------------------------------
def _read_image(path, shape):
    """A PNG/JPEG file as float32 [H, W, C] in [0, 1], converted to the servable's input shape."""
    from PIL import Image

    height, width, channels = shape
    image = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
    array = np.asarray(image, np.float32) / 255.0
    return array.reshape(height, width, channels)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["classify", "generate", "metadata"])
    parser.add_argument("images", nargs="*", help="image files (classify)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=None, help="default 8500 (gRPC) or 8501 (REST)")
    parser.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    parser.add_argument("--model", default="ganem", help="zoo model name: servables MODEL_enet, MODEL_generator")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--cluster", type=int, default=0, help="generate: cluster id")
    parser.add_argument("--count", type=int, default=8, help="generate: number of samples")
    parser.add_argument("--seed", type=int, default=0, help="generate: noise seed")
    parser.add_argument("--scale", type=float, default=None, help="generate: latent scale (GM-GAN)")
    parser.add_argument("--out", default="generated.png", help="generate: PNG grid written here")
    args = parser.parse_intermixed_args(argv)  # image paths may come after the options
    port = args.port or (8500 if args.protocol == "grpc" else 8501)
    client = ZooClient(args.host, port, args.model, args.protocol, timeout=args.timeout)
    try:
        if args.command == "metadata":
            print(json.dumps(client.metadata(), indent=2))
        elif args.command == "classify":
            if not args.images:
                parser.error("classify needs at least one image file")
            # The E-net declares its input shape; older exports only the generator's output, the same.
            signatures = client.metadata()
            shape = signatures[client.enet]["signatures"]["serving_default"]["inputs"]["images"]
            shape = (shape or signatures[client.generator]["signatures"]["sample"]["outputs"]["images"])[1:]
            if len(shape) != 3:
                raise ServingClientError("INVALID_ARGUMENT", f"{client.enet} takes vectors of shape {shape}, "
                                         "not images: call ZooClient.classify from Python")
            try:
                images = np.stack([_read_image(path, shape) for path in args.images])
            except OSError as err:
                print(f"serving.client: error: cannot read image: {err}", file=sys.stderr)
                return 2
            result = client.classify(images)
            for path, cluster, probs in zip(args.images, result["cluster"], result["probabilities"]):
                print(json.dumps({"image": path, "cluster": int(cluster), "probability": round(float(probs.max()), 4)}))
        else:
            images = client.sample(args.cluster, args.count, args.seed, args.scale)
            if images.ndim == 4:
                from zoo import plots

                plots.sample_grid(images[None], args.out, title=f"{args.model}: cluster {args.cluster}")
                print(f"wrote {args.out}")
            else:
                np.save(args.out.rsplit(".", 1)[0] + ".npy", images)
                print(f"wrote {args.out.rsplit('.', 1)[0]}.npy")
    except ServingClientError as err:
        print(f"serving.client: error: {err}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
