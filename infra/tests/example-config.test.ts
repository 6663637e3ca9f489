// Pulumi.dev.yaml, the documented example, is a configuration the program accepts, and the
// values it shows are the defaults.
import { strict as assert } from "node:assert";
import { before, it } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { Run, containers, one, runProgram } from "./harness";

let run: Run;
let example: Record<string, unknown>;

before(async () => {
  const file = path.join(__dirname, "..", "..", "Pulumi.dev.yaml");
  example = (yaml.load(fs.readFileSync(file, "utf8")) as { config: Record<string, unknown> }).config;
  run = await runProgram({ ...example, "wasm-platform:imageTag": "0.1.0" });
});

it("holds no secret and no value the program would refuse", () => {
  assert.equal(example["wasm-platform:otlpHeaders"], undefined);
  assert.ok(!JSON.stringify(example).match(/password|secret:/i));
  assert.equal(run.outputs.image, "123456789012.dkr.ecr.us-east-1.amazonaws.com/wasm-platform-test/host:0.1.0");
});

it("shows the defaults", () => {
  const orders = one(run, "aws:ecs/taskDefinition:TaskDefinition", "orders").inputs;
  assert.deepEqual([orders.cpu, orders.memory], ["256", "512"]);
  const kong = one(run, "aws:ecs/taskDefinition:TaskDefinition", "kong").inputs;
  assert.deepEqual([kong.cpu, kong.memory], ["512", "1024"]);
  assert.equal(containers(run, "kong")[0].image, "kong:3.9.1");
  const target = one(run, "aws:appautoscaling/target:Target", "invoices").inputs;
  assert.deepEqual([target.minCapacity, target.maxCapacity], [2, 6]);
  const db = one(run, "aws:rds/instance:Instance", "database").inputs;
  assert.deepEqual([db.instanceClass, db.allocatedStorage, db.deletionProtection], ["db.t4g.micro", 20, true]);
  const mq = one(run, "aws:mq/broker:Broker", "events").inputs;
  assert.deepEqual([mq.hostInstanceType, mq.deploymentMode, mq.engineVersion], ["mq.t3.micro", "SINGLE_INSTANCE", "3.13"]);
  assert.equal(one(run, "aws:cloudwatch/logGroup:LogGroup", "orders").inputs.retentionInDays, 30);
  assert.equal(one(run, "aws:ecs/cluster:Cluster", "platform").inputs.settings[0].value, "enabled");
  const backlog = one(run, "aws:appautoscaling/policy:Policy", "invoices-backlog").inputs;
  assert.equal(backlog.targetTrackingScalingPolicyConfiguration.targetValue, 50);
});
