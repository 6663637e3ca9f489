// Prints what `pulumi up` would create with the default configuration (type and name, one per
// line, then counts per type): `npm run resources`.
import { runProgram } from "./harness";

async function main(): Promise<void> {
  const run = await runProgram(
    { imageTag: "v1", otlpEndpoint: "https://otlp.example.com", otlpHeaders: "Authorization=Basic%20eA==" },
    ["otlpHeaders"],
  );
  const rows = run.resources.map((r) => `${r.type}  ${r.name}`).sort();
  for (const row of rows) console.log(row);
  console.log(`\n${rows.length} resources`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
