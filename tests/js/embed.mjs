// Embed sentences with a compress embedder folder in transformers.js's feature-extraction pipeline, as a user's
// Node program would: local files only, the folder as it was written, the pooling its sentence-transformers
// config names passed as the pipeline's options.
// Usage: node embed.mjs MODEL_FOLDER SENTENCES.json POOLING NORMALIZE  -> prints [[v0, v1, ...], ...] as JSON
import { readFileSync } from "node:fs";
import { env, pipeline } from "@huggingface/transformers";

const [folder, sentencesFile, pooling, normalize] = process.argv.slice(2);
env.allowRemoteModels = false;
const sentences = JSON.parse(readFileSync(sentencesFile, "utf8"));
const extractor = await pipeline("feature-extraction", folder);
const vectors = [];
for (const sentence of sentences) {
  const output = await extractor(sentence, { pooling, normalize: normalize === "true" });
  vectors.push(Array.from(output.data));
}
process.stdout.write(JSON.stringify(vectors));
