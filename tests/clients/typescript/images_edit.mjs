// The official openai-node SDK editing images through the gateway's REST edge (one image, several
// with a mask, and streamed), as a Node app would:
//   node images_edit.mjs <base url> <api key> <png path>
// Prints what came back as JSON, so tests/clients/test_typescript_client.py can check it.
import { readFile } from "node:fs/promises";
import OpenAI, { toFile } from "openai";

const [baseURL, apiKey, pngPath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const png = await readFile(pngPath);
const file = (name) => toFile(png, name, { type: "image/png" });

const one = await client.images.edit({ model: "local/canvas", image: await file("a.png"), prompt: "from node", size: "64x64" });
const several = await client.images.edit({
  model: "local/canvas",
  image: [await file("a.png"), await file("b.png")],
  mask: await file("mask.png"),
  prompt: "from node, twice",
  size: "64x64",
  n: 2,
});
const stream = await client.images.edit({
  model: "local/canvas",
  image: await file("a.png"),
  prompt: "streamed from node",
  size: "64x64",
  stream: true,
  partial_images: 2,
});
const streamed = [];
for await (const event of stream) {
  streamed.push({ type: event.type, partialImageIndex: event.partial_image_index ?? null });
}
let refused = null;
try {
  await client.images.edit({ model: "openai/dall-e-3", image: await file("a.png"), prompt: "x", size: "1024x1024" });
} catch (error) {
  refused = { status: error.status, code: error.code, param: error.param };
}
const summary = (result) => result.data.map((image) => Buffer.from(image.b64_json, "base64").subarray(1, 4).toString());
console.log(JSON.stringify({ one: summary(one), several: summary(several), streamed, refused }));
