// Without an image to run the program stops before declaring anything, naming the missing key.
import { strict as assert } from "node:assert";
import { it } from "node:test";
import { runProgram } from "./harness";

it("refuses to run without imageTag or image", async () => {
  await assert.rejects(runProgram({ otlpEndpoint: "https://otlp.example.com" }), /imageTag/);
});
