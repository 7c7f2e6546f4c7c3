// The AI SDK (`ai` with `@ai-sdk/openai`) editing images through the gateway's REST edge, as a Node
// app would: generateImage with input images (`prompt: {images, text}`), which the OpenAI provider
// sends to POST /images/edits as a multipart form.
//   node ai_sdk_edit.mjs <base url> <api key> <png path>
// Prints what came back as JSON, so tests/clients/test_typescript_client.py can check it.
import { readFile } from "node:fs/promises";
import { createOpenAI } from "@ai-sdk/openai";
import { generateImage } from "ai";

const [baseURL, apiKey, pngPath] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const png = new Uint8Array(await readFile(pngPath));

const one = await generateImage({
  model: openai.image("local/canvas"),
  prompt: { images: [png], text: "from the AI SDK" },
  size: "64x64",
  maxRetries: 0,
});
const several = await generateImage({
  model: openai.image("local/canvas"),
  prompt: { images: [png, png], mask: png, text: "from the AI SDK, two inputs" },
  size: "64x64",
  maxRetries: 0,
});
let refused = null;
try {
  await generateImage({
    model: openai.image("openai/dall-e-3"), // (no edits; refused before its provider is looked for)
    prompt: { images: [png], text: "x" },
    size: "1024x1024",
    maxRetries: 0,
  });
} catch (error) {
  refused = { status: error.statusCode ?? null, body: error.responseBody ? JSON.parse(error.responseBody) : null };
}
const summary = (result) => result.images.map((image) => ({ mediaType: image.mediaType, bytes: image.uint8Array.length }));
console.log(JSON.stringify({ one: summary(one), several: summary(several), refused }));
