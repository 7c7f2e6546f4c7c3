// A Node gRPC caller built only from `make proto-ts` output: calls GenerateImages and ListModels and
// prints what it got as JSON, so tests/clients/test_typescript_client.py can check it.
//   node client.mjs <host:port> <api key>
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GenerateImagesRequestSchema, ImageGeneration } from "./gen/mg/v1/image_generation_pb.js";

const [target, key] = process.argv.slice(2);
const transport = createGrpcTransport({ baseUrl: `http://${target}` });
const client = createClient(ImageGeneration, transport);
const headers = { authorization: `Bearer ${key}` };

const response = await client.generateImages(
  create(GenerateImagesRequestSchema, { model: "local/sketch", prompt: "from node", size: "256x256", n: 2 }),
  { headers },
);
const models = await client.listModels({}, { headers });
let refused = null;
try {
  await client.generateImages({ model: "nope/x", prompt: "x" }, { headers });
} catch (error) {
  refused = { code: error.code, message: error.rawMessage };
}
console.log(JSON.stringify({
  id: response.id,
  images: response.data.map((image) => ({ bytes: image.b64Json.length, png: image.b64Json[1] === 0x50 })),
  outputImages: response.usage?.outputImages,
  models: models.data.map((model) => model.id),
  refused,
}));
