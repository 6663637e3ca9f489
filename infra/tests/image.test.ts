// The program and the image agree: every path the task definitions hand the host (its manifest,
// the RDS CA bundle in the database URLs) is one the repository's Dockerfile puts in the image,
// and the manifests name the ports the services and Kong use.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { readComponents, repositoryRoot } from "../src/components";
import { RDS_CA_BUNDLE } from "../src/secrets";

const ROOT = repositoryRoot();
const DOCKERFILE = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");

/** The final stage's instructions, continuation lines joined. */
function finalStage(): string[] {
  const lines = DOCKERFILE.replace(/\\\n\s*/g, " ").split("\n").map((line) => line.trim());
  const from = lines.map((line, index) => (/^FROM\s/i.test(line) ? index : -1)).filter((index) => index >= 0);
  return lines.slice(from[from.length - 1]).filter((line) => line && !line.startsWith("#"));
}

describe("the image the program runs", () => {
  it("holds the RDS CA bundle the database URLs name", () => {
    const adds = finalStage().filter((line) => /^ADD\s/i.test(line));
    const bundle = adds.find((line) => line.split(/\s+/).pop() === RDS_CA_BUNDLE);
    assert.ok(bundle, `the Dockerfile's final stage has no ADD to ${RDS_CA_BUNDLE}`);
    assert.match(bundle, /https:\/\/truststore\.pki\.rds\.amazonaws\.com\/global\/global-bundle\.pem/);
  });

  it("holds each component's manifest, and the manifests listen where Kong and the health checks look", () => {
    assert.ok(finalStage().some((line) => /^COPY\s+deploy\/manifests\s+\/app\/manifests$/.test(line)));
    for (const { name: component, route } of readComponents(ROOT)) {
      const manifest = fs.readFileSync(path.join(ROOT, "deploy", "manifests", `${component}.toml`), "utf8");
      assert.match(manifest, /\[http\]\s*\nlisten = "0\.0\.0\.0:8000"/, `${component}: HTTP on 8000`);
      assert.match(manifest, /\[admin\]\s*\nlisten = "0\.0\.0\.0:9000"/, `${component}: admin on 9000`);
      assert.match(manifest, new RegExp(`route = "${route}"`), `${component}: its route`);
    }
  });
});
