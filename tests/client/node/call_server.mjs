// A Node.js client of a bertserve server, used by tests/test_node_client.py to
// check that a non-Python gRPC stack can talk to the server.
//
//   node call_server.mjs ADDRESS PROTO_ROOT MODE
//
// MODE "protos": load the .proto files under PROTO_ROOT (e.g. <repo>/protos)
//   with @grpc/proto-loader and call every task service once, plus
//   ModelService.ListHeads and GetHead, InferenceService.Predict and Analyze,
//   and one bad FillMask call whose status code, message and google.rpc.Status
//   details (grpc-status-details-bin) are kept.
// MODE "reflection": use no .proto files at all (PROTO_ROOT is ignored; pass
//   "-"). Ask grpc.reflection.v1alpha.ServerReflection for the services, fetch
//   the file descriptors of each, list its methods, and call
//   ModelService.ListHeads and InferenceService.Predict through the
//   descriptors the server sent.
// MODE "token": load the .proto files and call SentimentService twice: without
//   metadata, and with "authorization: Bearer $NODE_CLIENT_TOKEN" and an
//   x-request-id; keeps the status of the first and the answer and response
//   headers of the second.
// MODE "offsets": load the .proto files and call QuestionAnsweringService once
//   with the [question, context] pairs of $NODE_QA_INPUTS (JSON); slice each
//   context by every answer's offsets in JavaScript's own types: a Buffer of
//   its UTF-8 bytes by start_byte/end_byte, and the UTF-16 string by start/end
//   (code points), which goes wrong after a character outside the BMP.
//
// google.protobuf.Struct values (head schemas, Predict/Analyze inputs and
// outputs) are printed as the plain JSON they stand for, not as proto-loader's
// {fields: {key: {kind, ..._value}}} objects.
//
// Prints ONE JSON object to stdout. Exits non-zero on any unexpected error
// (the bad FillMask call failing is expected; it succeeding is not).

import fs from "node:fs";
import path from "node:path";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const DEADLINE_MS = 10_000;
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

// Neither @grpc/grpc-js nor @grpc/proto-loader ships reflection.proto or the
// google.rpc status protos, so their messages are declared here in
// protobuf.js JSON form (field numbers as in grpc/reflection/v1alpha/
// reflection.proto and google/rpc/{status,error_details}.proto; fields not
// needed here are left out, which protobuf decoding tolerates).
const SCHEMA = {
  nested: {
    grpc: { nested: { reflection: { nested: { v1alpha: { nested: {
      ServerReflection: {
        methods: {
          ServerReflectionInfo: {
            requestType: "ServerReflectionRequest",
            requestStream: true,
            responseType: "ServerReflectionResponse",
            responseStream: true,
          },
        },
      },
      ServerReflectionRequest: {
        oneofs: {
          message_request: {
            oneof: ["file_by_filename", "file_containing_symbol", "file_containing_extension",
              "all_extension_numbers_of_type", "list_services"],
          },
        },
        fields: {
          host: { type: "string", id: 1 },
          file_by_filename: { type: "string", id: 3 },
          file_containing_symbol: { type: "string", id: 4 },
          file_containing_extension: { type: "ExtensionRequest", id: 5 },
          all_extension_numbers_of_type: { type: "string", id: 6 },
          list_services: { type: "string", id: 7 },
        },
      },
      ExtensionRequest: {
        fields: { containing_type: { type: "string", id: 1 }, extension_number: { type: "int32", id: 2 } },
      },
      ServerReflectionResponse: {
        oneofs: {
          message_response: {
            oneof: ["file_descriptor_response", "all_extension_numbers_response", "list_services_response",
              "error_response"],
          },
        },
        fields: {
          valid_host: { type: "string", id: 1 },
          original_request: { type: "ServerReflectionRequest", id: 2 },
          file_descriptor_response: { type: "FileDescriptorResponse", id: 4 },
          all_extension_numbers_response: { type: "ExtensionNumberResponse", id: 5 },
          list_services_response: { type: "ListServiceResponse", id: 6 },
          error_response: { type: "ErrorResponse", id: 7 },
        },
      },
      FileDescriptorResponse: { fields: { file_descriptor_proto: { rule: "repeated", type: "bytes", id: 1 } } },
      ExtensionNumberResponse: {
        fields: {
          base_type_name: { type: "string", id: 1 },
          extension_number: { rule: "repeated", type: "int32", id: 2 },
        },
      },
      ListServiceResponse: { fields: { service: { rule: "repeated", type: "ServiceResponse", id: 1 } } },
      ServiceResponse: { fields: { name: { type: "string", id: 1 } } },
      ErrorResponse: { fields: { error_code: { type: "int32", id: 1 }, error_message: { type: "string", id: 2 } } },
    } } } } } },
    google: { nested: {
      protobuf: { nested: {
        Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } },
        Empty: { fields: {} },
      } },
      rpc: { nested: {
        Status: {
          fields: {
            code: { type: "int32", id: 1 },
            message: { type: "string", id: 2 },
            details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
          },
        },
        ErrorInfo: {
          fields: {
            reason: { type: "string", id: 1 },
            domain: { type: "string", id: 2 },
            metadata: { keyType: "string", type: "string", id: 3 },
          },
        },
        BadRequest: {
          fields: { field_violations: { rule: "repeated", type: "FieldViolation", id: 1 } },
          nested: {
            FieldViolation: {
              fields: {
                field: { type: "string", id: 1 },
                description: { type: "string", id: 2 },
                reason: { type: "string", id: 3 },
              },
            },
          },
        },
      } },
    } },
    // Never called: proto-loader exposes deserializers only for RPC messages,
    // so these local-only methods are how google.rpc messages get decoded.
    bertserve_node_test: { nested: {
      Decoders: {
        methods: {
          Status: { requestType: "google.protobuf.Empty", responseType: "google.rpc.Status" },
          ErrorInfo: { requestType: "google.protobuf.Empty", responseType: "google.rpc.ErrorInfo" },
          BadRequest: { requestType: "google.protobuf.Empty", responseType: "google.rpc.BadRequest" },
        },
      },
    } },
  },
};

const schema = protoLoader.fromJSON(SCHEMA, LOADER_OPTIONS);
const decoders = schema["bertserve_node_test.Decoders"];
const DETAIL_DECODERS = {
  "type.googleapis.com/google.rpc.ErrorInfo": decoders.ErrorInfo.responseDeserialize,
  "type.googleapis.com/google.rpc.BadRequest": decoders.BadRequest.responseDeserialize,
};

// The input of the Predict call, and the Analyze call's text and head.
const PREDICT_HEAD = "sentiment";
const PREDICT_INPUT = { text: "a great movie" };

// Converts google.protobuf.Struct between proto-loader's object form and plain
// JSON. That form depends on where the descriptors came from:
// - Value's field names: protobufjs bundles its own struct.proto with
//   camelCase names (stringValue), while the descriptors reflection sends keep
//   the .proto's snake_case (string_value); so they are looked up by number.
// - Struct.fields: a map ({key: Value}) from .proto files, but a repeated
//   {key, value} entry message from serialized descriptors (protobufjs drops
//   their map_entry option); so a Struct is round-tripped through the
//   PredictRequest (de)serializer once to see which.
function structCodec(definition) {
  const value = definition["google.protobuf.Value"];
  if (!value) throw new Error("the loaded descriptors do not include google.protobuf.Value");
  const byNumber = Object.fromEntries(value.type.field.map((f) => [f.number, f.name]));
  const [NULL, NUMBER, STRING, BOOL, STRUCT, LIST] = [1, 2, 3, 4, 5, 6].map((n) => byNumber[n]);
  const predict = definition["bertserve.v1.InferenceService"]?.Predict;
  if (!predict) throw new Error("the loaded descriptors do not include bertserve.v1.InferenceService");
  const probe = { input: { fields: [{ key: "probe", value: { [STRING]: "x" } }] } };
  const fieldsAsEntries = Array.isArray(predict.requestDeserialize(predict.requestSerialize(probe)).input.fields);

  // oneofs: true makes `kind` name the member that is set.
  function fromValue(v) {
    switch (v.kind) {
      case NULL: return null;
      case NUMBER: case STRING: case BOOL: return v[v.kind];
      case STRUCT: return fromStruct(v[STRUCT]);
      case LIST: return (v[LIST].values ?? []).map(fromValue);
      default: throw new Error(`google.protobuf.Value with no known kind: ${JSON.stringify(v)}`);
    }
  }

  // An unset Struct field (null) reads as {}, as proto3 reads it.
  function fromStruct(struct) {
    const fields = struct?.fields ?? [];
    const entries = Array.isArray(fields) ? fields.map((e) => [e.key, e.value]) : Object.entries(fields);
    return Object.fromEntries(entries.map(([key, v]) => [key, fromValue(v)]));
  }

  function toValue(json) {
    if (json === null) return { [NULL]: "NULL_VALUE" };
    if (Array.isArray(json)) return { [LIST]: { values: json.map(toValue) } };
    switch (typeof json) {
      case "number": return { [NUMBER]: json };
      case "string": return { [STRING]: json };
      case "boolean": return { [BOOL]: json };
      case "object": return { [STRUCT]: toStruct(json) };
      default: throw new Error(`no JSON form for ${typeof json}`);
    }
  }

  function toStruct(object) {
    const entries = Object.entries(object).map(([key, json]) => [key, toValue(json)]);
    return { fields: fieldsAsEntries ? entries.map(([key, v]) => ({ key, value: v })) : Object.fromEntries(entries) };
  }

  // A HeadInfo with its schemas as plain JSON.
  function plainHead(head) {
    return { ...head, input_schema: fromStruct(head.input_schema), output_schema: fromStruct(head.output_schema) };
  }

  return { fromStruct, toStruct, plainHead, plainHeads: (r) => ({ ...r, heads: r.heads.map(plainHead) }) };
}

async function predict(client, codec) {
  const response = await unary(client, "Predict", { head: PREDICT_HEAD, input: codec.toStruct(PREDICT_INPUT) });
  return codec.fromStruct(response.output);
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// The google.rpc.Status of a failed call's grpc-status-details-bin trailer, decoded.
function statusDetails(err) {
  const values = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (values.length === 0) return null;
  const raw = Buffer.from(values[0]);
  const status = decoders.Status.responseDeserialize(raw);
  return {
    byte_length: raw.length,
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const decode = DETAIL_DECODERS[any.type_url];
      if (!decode) return { type_url: any.type_url, byte_length: any.value.length };
      return { type_url: any.type_url, ...decode(any.value) };
    }),
  };
}

function protoFiles(root, folder = "") {
  const found = [];
  for (const entry of fs.readdirSync(path.join(root, folder), { withFileTypes: true })) {
    const relative = path.join(folder, entry.name);
    if (entry.isDirectory()) found.push(...protoFiles(root, relative));
    else if (entry.isFile() && entry.name.endsWith(".proto")) found.push(relative);
  }
  if (!folder && found.length === 0) throw new Error(`no .proto files under ${root}`);
  return found.sort();
}

async function withClients(address, constructors, body) {
  const clients = Object.fromEntries(
    Object.entries(constructors).map(([name, Ctor]) => [name, new Ctor(address, grpc.credentials.createInsecure())]),
  );
  try {
    return await body(clients);
  } finally {
    for (const client of Object.values(clients)) client.close();
  }
}

async function modeProtos(address, protoRoot) {
  const files = protoFiles(protoRoot);
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
  const v1 = grpc.loadPackageDefinition(definition).bertserve.v1;
  const codec = structCodec(definition);
  const constructors = {
    fillMask: v1.FillMaskService,
    sentiment: v1.SentimentService,
    qa: v1.QuestionAnsweringService,
    nsp: v1.NextSentenceService,
    model: v1.ModelService,
    inference: v1.InferenceService,
  };
  return withClients(address, constructors, async (c) => {
    const result = { proto_files: files };
    // One call at a time, so each is batched alone, as the Python client's are.
    result.fill_mask = await unary(c.fillMask, "FillMask", { texts: ["the [MASK] was good ."], top_k: 3 });
    result.sentiment = await unary(c.sentiment, "ClassifySentiment", { texts: ["a great movie"] });
    result.answer = await unary(c.qa, "AnswerQuestion", {
      inputs: [{ question: "who went home ?", context: "john went home at night ." }],
    });
    result.next_sentence = await unary(c.nsp, "PredictNextSentence", {
      pairs: [{ first: "john went home .", second: "he slept ." }],
    });
    result.list_heads = codec.plainHeads(await unary(c.model, "ListHeads", {}));
    result.get_head = codec.plainHead((await unary(c.model, "GetHead", { name: PREDICT_HEAD })).head);
    result.predict = await predict(c.inference, codec);
    const analyzed = await unary(c.inference, "Analyze", {
      inputs: [{ text: PREDICT_INPUT.text }],
      heads: [{ head: PREDICT_HEAD }],
    });
    result.analyze = analyzed.results.map((r) =>
      r.outputs.map((o) => ({ head: o.head, output: codec.fromStruct(o.output) })));
    try {
      const unexpected = await unary(c.fillMask, "FillMask", { texts: ["no mask"] });
      throw new Error(`FillMask(["no mask"]) should have failed but returned ${JSON.stringify(unexpected)}`);
    } catch (err) {
      if (typeof err.code !== "number") throw err;
      result.bad_fill_mask = {
        code: err.code,
        code_name: grpc.status[err.code],
        details: err.details,
        status_details: statusDetails(err),
      };
    }
    return result;
  });
}

// One reflection request on its own stream; resolves with the single response.
function reflect(client, request) {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo({ deadline: deadline() });
    let response = null;
    call.on("data", (message) => { response = message; });
    call.on("error", reject);
    call.on("end", () => {
      if (response) resolve(response);
      else reject(new Error(`no reflection response to ${JSON.stringify(request)}`));
    });
    call.write(request);
    call.end();
  });
}

// Serialize a google.protobuf.FileDescriptorSet: field 1 (repeated, length-delimited) per file.
function fileDescriptorSet(files) {
  const parts = [];
  for (const bytes of files) {
    const header = [0x0a];
    for (let n = bytes.length; ; n >>>= 7) {
      if (n < 0x80) { header.push(n); break; }
      header.push((n & 0x7f) | 0x80);
    }
    parts.push(Buffer.from(header), bytes);
  }
  return Buffer.concat(parts);
}

async function modeReflection(address) {
  const reflectionService = grpc.loadPackageDefinition(schema).grpc.reflection.v1alpha.ServerReflection;
  return withClients(address, { reflection: reflectionService }, async ({ reflection }) => {
    const listed = await reflect(reflection, { list_services: "*" });
    if (listed.message_response !== "list_services_response") {
      throw new Error(`list_services answered ${JSON.stringify(listed)}`);
    }
    const services = listed.list_services_response.service.map((s) => s.name).sort();

    // Serialized FileDescriptorProtos, keyed by content: the same file (e.g. a
    // shared dependency) comes back for several services.
    const files = new Map();
    const errors = {};
    for (const service of services) {
      const answer = await reflect(reflection, { file_containing_symbol: service });
      if (answer.message_response !== "file_descriptor_response") {
        errors[service] = answer.error_response ?? answer.message_response;
        continue;
      }
      for (const bytes of answer.file_descriptor_response.file_descriptor_proto) {
        files.set(bytes.toString("base64"), bytes);
      }
    }
    const unique = [...files.values()];
    const definition = protoLoader.loadFileDescriptorSetFromBuffer(fileDescriptorSet(unique), LOADER_OPTIONS);
    const methods = {};
    for (const service of services) {
      const def = definition[service];
      if (def && !("format" in def)) methods[service] = Object.values(def).map((m) => m.path).sort();
    }

    // Calls made with nothing but what reflection returned.
    const v1 = grpc.loadPackageDefinition(definition).bertserve?.v1;
    if (!v1?.ModelService) throw new Error("reflection did not describe bertserve.v1.ModelService");
    if (!v1?.InferenceService) throw new Error("reflection did not describe bertserve.v1.InferenceService");
    const codec = structCodec(definition);
    const constructors = { model: v1.ModelService, inference: v1.InferenceService };
    const calls = await withClients(address, constructors, async (c) => ({
      list_heads: codec.plainHeads(await unary(c.model, "ListHeads", {})),
      predict: await predict(c.inference, codec),
    }));

    return { services, methods, errors, ...calls };
  });
}

async function modeToken(address, protoRoot) {
  const files = protoFiles(protoRoot);
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
  const v1 = grpc.loadPackageDefinition(definition).bertserve.v1;
  const client = new v1.SentimentService(address, grpc.credentials.createInsecure());
  const request = { texts: ["a great movie"] };
  const call = (metadata) =>
    new Promise((resolve) => {
      let headers = {};
      const deadline = new Date(Date.now() + DEADLINE_MS);
      const rpc = client.ClassifySentiment(request, metadata, { deadline }, (err, response) =>
        resolve({ code: err ? err.code : 0, details: err ? err.details : "", response, headers }),
      );
      rpc.on("metadata", (m) => { headers = m.getMap(); });
    });
  try {
    const anonymous = await call(new grpc.Metadata());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${process.env.NODE_CLIENT_TOKEN}`);
    metadata.set("x-request-id", "node-call-1");
    const authorized = await call(metadata);
    return {
      anonymous: { code: grpc.status[anonymous.code], details: anonymous.details },
      authorized: {
        code: grpc.status[authorized.code],
        label: authorized.response?.results?.[0]?.label ?? null,
        request_id: authorized.headers["x-request-id"] ?? null,
      },
    };
  } finally {
    client.close();
  }
}

async function modeOffsets(address, protoRoot) {
  const files = protoFiles(protoRoot);
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
  const v1 = grpc.loadPackageDefinition(definition).bertserve.v1;
  const pairs = JSON.parse(process.env.NODE_QA_INPUTS);
  return withClients(address, { qa: v1.QuestionAnsweringService }, async ({ qa }) => {
    const response = await unary(qa, "AnswerQuestion", {
      inputs: pairs.map(([question, context]) => ({ question, context })),
      top_k: 10,
    });
    return response.results.map((result, i) => {
      const context = pairs[i][1];
      const utf8 = Buffer.from(context, "utf8");
      const codePoints = Array.from(context); // iterating a string yields code points
      return {
        context,
        answers: result.answers.map((a) => ({
          text: a.text,
          start: a.start,
          end: a.end,
          start_byte: a.start_byte,
          end_byte: a.end_byte,
          by_bytes: utf8.subarray(a.start_byte, a.end_byte).toString("utf8"),
          by_code_points: codePoints.slice(a.start, a.end).join(""),
          by_utf16_index: context.slice(a.start, a.end),
        })),
      };
    });
  });
}

async function main() {
  const [address, protoRoot, mode] = process.argv.slice(2);
  const modes = { protos: modeProtos, token: modeToken, offsets: modeOffsets };
  if (!address || !protoRoot || !(mode in modes || mode === "reflection")) {
    throw new Error("usage: node call_server.mjs ADDRESS PROTO_ROOT protos|reflection|token|offsets");
  }
  const result = mode === "reflection" ? await modeReflection(address) : await modes[mode](address, path.resolve(protoRoot));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// A last resort should a call hang despite its deadline.
setTimeout(() => {
  console.error("call_server.mjs: still running after 50 s; giving up");
  process.exit(2);
}, 50_000).unref();

main().catch((err) => {
  console.error(`call_server.mjs: ${err && err.stack ? err.stack : err}`);
  if (err && typeof err.code === "number") {
    console.error(`gRPC status ${err.code} (${grpc.status[err.code]}): ${err.details}`);
  }
  process.exitCode = 1;
});
