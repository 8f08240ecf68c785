// Classify sentences with a compress model folder in transformers.js, as a user's Node program would:
// local files only, the folder as it was written, no options but the ones a user would pass.
// Usage: node classify.mjs MODEL_FOLDER SENTENCES.json  -> prints [[p0, p1, ...], ...] as JSON
import { readFileSync } from "node:fs";
import { env, AutoTokenizer, AutoModelForSequenceClassification, softmax } from "@huggingface/transformers";

const [folder, sentencesFile] = process.argv.slice(2);
env.allowRemoteModels = false;
const sentences = JSON.parse(readFileSync(sentencesFile, "utf8"));
const tokenizer = await AutoTokenizer.from_pretrained(folder);
const model = await AutoModelForSequenceClassification.from_pretrained(folder);
const probabilities = [];
for (const sentence of sentences) {
  const { logits } = await model(await tokenizer(sentence, { truncation: true, max_length: 128 }));
  probabilities.push(softmax(Array.from(logits.data)));
}
process.stdout.write(JSON.stringify(probabilities));
