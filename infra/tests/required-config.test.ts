// Configuration the program refuses before declaring anything, naming the key at fault.
import { strict as assert } from "node:assert";
import { it } from "node:test";
import { runProgram } from "./harness";

it("refuses to run without imageTag or image", async () => {
  await assert.rejects(runProgram({ otlpEndpoint: "https://otlp.example.com" }), /imageTag/);
});

// A failed program is not cached by require(), so each case here runs it afresh.
it("refuses an OTLP endpoint the tasks could not reach (they leave the VPC on 443 only)", async () => {
  for (const endpoint of ["http://collector:4318", "https://collector:4318", "collector.example.com"]) {
    await assert.rejects(runProgram({ imageTag: "v1", otlpEndpoint: endpoint }), /https:\/\/ URL on port 443/, endpoint);
  }
});
