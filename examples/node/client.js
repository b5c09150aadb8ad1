// Calls a Switchyard gateway from Node.js: @grpc/grpc-js, with the contract
// loaded at run time from protos/switchyard/v1 by @grpc/proto-loader.
//
// It lists the routes, classifies one held-out digit with Gateway.Infer and
// checks the label, pipelines 100 requests on one InferStream, sends a bad
// input and checks that it is INVALID_ARGUMENT, then submits the digit as a
// job (Jobs.SubmitJob) and follows it with Jobs.WatchJob until it succeeds.
// It prints one line per step and exits 1 at the first step that fails.
//
//   node client.js --target localhost:8500 --digit digit.json
//
// digit.json holds {"pixels": [64 numbers, 0..16], "label": N}.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const STREAM_REQUESTS = 100;

function loadContract() {
  const definition = protoLoader.loadSync(["switchyard/v1/gateway.proto", "switchyard/v1/jobs.proto"], {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto: raw_data, request_id, ...
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).switchyard.v1;
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 30_000 }, (error, answer) =>
      error ? reject(error) : resolve(answer),
    );
  });
}

// One request on route digits: an FP32 tensor [1, pixels.length], little-endian.
function digitRequest(pixels, requestId) {
  const raw = Buffer.alloc(4 * pixels.length);
  pixels.forEach((value, i) => raw.writeFloatLE(value, 4 * i));
  return {
    route: "digits",
    request_id: requestId,
    inputs: [{ name: "image", datatype: "FP32", shape: [1, pixels.length], raw_data: raw }],
  };
}

// The INT64 output "label" of a one-row answer.
function labelOf(answer) {
  const tensor = answer.outputs.find((t) => t.name === "label");
  if (!tensor || tensor.datatype !== "INT64" || tensor.raw_data.length !== 8) {
    throw new Error(`answer has no one-row INT64 output 'label': ${JSON.stringify(answer.outputs.map((t) => t.name))}`);
  }
  return Number(tensor.raw_data.readBigInt64LE(0));
}

function inferStream(gateway, digit, metadata) {
  return new Promise((resolve, reject) => {
    const call = gateway.InferStream(metadata, { deadline: Date.now() + 60_000 });
    const answered = new Set();
    call.on("data", (message) => {
      if (message.result === "error") {
        reject(new Error(`InferStream: request ${message.request_id} failed: ${message.error.message}`));
        call.cancel();
        return;
      }
      const label = labelOf(message.response);
      if (label !== digit.label) {
        reject(new Error(`InferStream: request ${message.request_id}: label ${label}, the digit is a ${digit.label}`));
        call.cancel();
        return;
      }
      answered.add(message.request_id);
    });
    call.on("error", reject);
    call.on("end", () => resolve(answered));
    for (let i = 0; i < STREAM_REQUESTS; i++) {
      call.write(digitRequest(digit.pixels, `node-stream-${i}`));
    }
    call.end();
  });
}

function watchJob(jobs, jobId, metadata) {
  return new Promise((resolve, reject) => {
    const call = jobs.WatchJob({ job_id: jobId }, metadata, { deadline: Date.now() + 60_000 });
    const seen = [];
    call.on("data", (job) => seen.push(job));
    call.on("error", reject);
    call.on("end", () => resolve(seen));
  });
}

async function main() {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "localhost:8500" },
      digit: { type: "string", default: "digit.json" },
      "api-key": { type: "string", default: process.env.SWITCHYARD_API_KEY || "" },
    },
  });
  const digit = JSON.parse(fs.readFileSync(values.digit, "utf8"));
  if (digit.pixels.length !== 64) throw new Error(`${values.digit}: ${digit.pixels.length} pixels, want 64`);
  const metadata = new grpc.Metadata();
  if (values["api-key"]) metadata.set("authorization", `Bearer ${values["api-key"]}`);

  const v1 = loadContract();
  const credentials = grpc.credentials.createInsecure();
  const gateway = new v1.Gateway(values.target, credentials);
  const jobs = new v1.Jobs(values.target, credentials);
  try {
    // ListRoutes
    const routes = (await unary(gateway, "ListRoutes", {}, metadata)).routes.map((r) => r.name);
    if (!routes.includes("digits")) throw new Error(`ListRoutes: no route 'digits' in ${routes}`);
    console.log(`node client: ListRoutes: ${routes.length} routes: ${routes.join(",")}`);

    // Infer on one held-out digit
    const answer = await unary(gateway, "Infer", digitRequest(digit.pixels, "node-infer"), metadata);
    const label = labelOf(answer);
    if (label !== digit.label) throw new Error(`Infer: label ${label}, the digit is a ${digit.label}`);
    console.log(`node client: Infer: label ${label} (expected ${digit.label}), request_id ${answer.request_id}`);

    // InferStream: 100 requests pipelined on one stream
    const answered = await inferStream(gateway, digit, metadata);
    if (answered.size !== STREAM_REQUESTS) {
      throw new Error(`InferStream: ${answered.size} answers for ${STREAM_REQUESTS} requests`);
    }
    console.log(`node client: InferStream: ${answered.size}/${STREAM_REQUESTS} answered, every label ${digit.label}`);

    // A bad input: 63 pixels where the route takes 64
    try {
      await unary(gateway, "Infer", digitRequest(digit.pixels.slice(0, 63), "node-bad"), metadata);
      throw new Error("bad input: the call succeeded");
    } catch (error) {
      if (error.code !== grpc.status.INVALID_ARGUMENT) throw error;
      console.log(`node client: bad input: INVALID_ARGUMENT: ${error.details}`);
    }

    // A job: submit, then watch until it ends
    const submitted = await unary(jobs, "SubmitJob", { request: digitRequest(digit.pixels, "node-job") }, metadata);
    const states = await watchJob(jobs, submitted.job_id, metadata);
    const last = states[states.length - 1];
    if (!last || last.state !== "JOB_STATE_SUCCEEDED") {
      throw new Error(`job ${submitted.job_id}: states ${states.map((j) => j.state)}, want it to end SUCCEEDED`);
    }
    const jobLabel = labelOf(last.response);
    if (jobLabel !== digit.label) throw new Error(`job ${submitted.job_id}: label ${jobLabel}, the digit is a ${digit.label}`);
    console.log(`node client: job ${submitted.job_id}: ${states.map((j) => j.state).join(" -> ")}, label ${jobLabel}`);
  } finally {
    gateway.close();
    jobs.close();
  }
}

main().catch((error) => {
  console.error(`node client: error: ${error.message || error}`);
  process.exit(1);
});
