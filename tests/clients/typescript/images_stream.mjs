// The official openai-node SDK streaming a generation through the gateway's REST edge, and
// models.retrieve with an id holding a slash, as a Node app would:
//   node images_stream.mjs <base url> <api key>
// Prints what came back as JSON, so tests/clients/test_typescript_client.py can check it.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const stream = await client.images.generate({
  model: "local/sketch",
  prompt: "streamed from node",
  size: "256x256",
  stream: true,
  partial_images: 2,
});
const events = [];
for await (const event of stream) {
  events.push({
    type: event.type,
    partialImageIndex: event.partial_image_index ?? null,
    png: Buffer.from(event.b64_json, "base64").subarray(1, 4).toString() === "PNG",
    outputImages: event.usage?.output_images ?? null,
  });
}
const model = await client.models.retrieve("local/sketch");
let refused = null;
try {
  for await (const event of await client.images.generate({ model: "nope/x", prompt: "x", stream: true })) {
    events.push(event.type);
  }
} catch (error) {
  refused = { status: error.status, code: error.code ?? error.error?.code ?? null };
}
console.log(JSON.stringify({ events, model: model.id, refused }));
