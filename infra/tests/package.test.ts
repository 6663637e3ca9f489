// package.json's test script runs every test file on each Node.js version the package accepts.
// Node 21 and later take a folder given to `node --test` as a module to run, not as a place to
// look for tests, so the script names the files (a glob npm's shell expands).
import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { it } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";

const ROOT = path.join(__dirname, "..", "..");
const PACKAGE = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };

it("names every compiled test file, and no folder, to node --test", () => {
  const m = /node --test (.+)$/.exec(PACKAGE.scripts.test);
  assert.ok(m, PACKAGE.scripts.test);
  // Expanded as npm expands it: by sh, from the package's folder.
  const given = execFileSync("sh", ["-c", `printf '%s\\n' ${m[1]}`], { cwd: ROOT, encoding: "utf8" })
    .split("\n").filter(Boolean);
  for (const file of given) assert.ok(fs.statSync(path.join(ROOT, file)).isFile(), `${file} is not a file`);
  const compiled = fs.readdirSync(__dirname).filter((name) => name.endsWith(".test.js"))
    .map((name) => path.relative(ROOT, path.join(__dirname, name)));
  assert.deepEqual([...given].sort(), compiled.sort());
});
