// A Node client of the aigateway bridge: @grpc/grpc-js with static code generated from protos/
// by ts-proto, a deadline on every call, a cancelled stream, and the rich error details of
// failed calls.
//
// Usage: node dist/client.js [ADDRESS]  (default $BRIDGE_ADDR, else 127.0.0.1:50051)
//
// It prints one line per step and exits 1 on the first unexpected outcome.

import {
  type CallOptions,
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";

import {
  ChatMessage,
  ChatServiceClient,
  CreateChatCompletionRequest,
  StreamChatCompletionRequest,
  type StreamChatCompletionResponse,
} from "./gen/aigateway/v1/chat";
import { CreateEmbeddingsRequest, EmbeddingsServiceClient } from "./gen/aigateway/v1/embeddings";
import { ListModelsRequest, ModelsServiceClient, RetrieveModelRequest } from "./gen/aigateway/v1/models";
import {
  type ResponseObject,
  ResponsesServiceClient,
  StreamResponseRequest,
  type StreamResponseResponse,
} from "./gen/aigateway/v1/responses";
import {
  BadRequest,
  ErrorInfo,
  QuotaFailure,
  RequestInfo,
  ResourceInfo,
  RetryInfo,
} from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

/** Deadline of every ordinary call: a client should never wait forever. */
const CALL_TIMEOUT_MS = 30_000;
/** Deadline of the call that is meant to run out. */
const SHORT_DEADLINE_MS = 500;

const address = process.argv[2] ?? process.env.BRIDGE_ADDR ?? "127.0.0.1:50051";
const chatModel = process.env.CHAT_MODEL ?? "openai/gpt-4o-mini";
const embeddingModel = process.env.EMBEDDING_MODEL ?? "openai/text-embedding-3-small";

const insecure = credentials.createInsecure();
const models = new ModelsServiceClient(address, insecure);
const chat = new ChatServiceClient(address, insecure);
const embeddings = new EmbeddingsServiceClient(address, insecure);
const responses = new ResponsesServiceClient(address, insecure);

class Unexpected extends Error {}

function fail(message: string): never {
  throw new Unexpected(message);
}

function withDeadline(ms: number): Partial<CallOptions> {
  return { deadline: new Date(Date.now() + ms) };
}

/** Promisifies a grpc-js unary call: (request, metadata, options, callback). */
function unary<Req, Res>(
  call: (
    request: Req,
    metadata: Metadata,
    options: Partial<CallOptions>,
    callback: (error: ServiceError | null, response: Res) => void,
  ) => unknown,
  request: Req,
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    call(request, new Metadata(), withDeadline(timeoutMs), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

function userMessage(text: string): ChatMessage[] {
  return [ChatMessage.fromPartial({ role: "user", contentText: text })];
}

async function listModels(): Promise<void> {
  const response = await unary(models.listModels.bind(models), ListModelsRequest.fromPartial({}));
  if (response.data.length === 0) fail("ListModels: no models");
  console.log(`models: ${response.data.map((m) => m.id).join(", ")}`);
}

async function unaryChat(): Promise<void> {
  const response = await unary(
    chat.createChatCompletion.bind(chat),
    CreateChatCompletionRequest.fromPartial({
      model: chatModel,
      messages: userMessage("Say hello to the TypeScript client."),
    }),
  );
  const choice = response.choices[0];
  if (!choice?.message?.content) fail(`CreateChatCompletion: no reply in ${JSON.stringify(response)}`);
  console.log(
    `unary: ${choice.message.content} (finish_reason=${choice.finishReason}, ` +
      `total_tokens=${response.usage?.totalTokens})`,
  );
}

async function streamChat(): Promise<void> {
  const stream = chat.streamChatCompletion(
    StreamChatCompletionRequest.fromPartial({
      model: chatModel,
      messages: userMessage("Stream a greeting to the TypeScript client."),
      streamOptions: { includeUsage: true },
    }),
    new Metadata(),
    withDeadline(CALL_TIMEOUT_MS),
  );
  process.stdout.write("stream: ");
  let chunks = 0;
  let text = "";
  let finish: string | undefined;
  let usage: StreamChatCompletionResponse["usage"];
  for await (const chunk of stream as AsyncIterable<StreamChatCompletionResponse>) {
    chunks++;
    for (const choice of chunk.choices) {
      const piece = choice.delta?.content ?? "";
      process.stdout.write(piece); // each token as it arrives
      text += piece;
      finish = choice.finishReason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  process.stdout.write("\n");
  if (!text || !usage) fail(`StreamChatCompletion: no text or no usage in ${chunks} chunks`);
  console.log(
    `stream: ${chunks} chunks, finish_reason=${finish}, ` +
      `usage=${usage.promptTokens}+${usage.completionTokens} tokens`,
  );
}

/**
 * Streams a Response (the Responses API): one typed event per server-sent event, in order. A
 * response.failed or error event ends the call with its mapped status (the loop throws).
 */
async function streamResponse(): Promise<void> {
  const stream = responses.streamResponse(
    StreamResponseRequest.fromPartial({
      model: chatModel,
      inputText: "Stream a response to the TypeScript client.",
    }),
    new Metadata(),
    withDeadline(CALL_TIMEOUT_MS),
  );
  process.stdout.write("response: ");
  let events = 0;
  let text = "";
  let final: ResponseObject | undefined;
  for await (const event of stream as AsyncIterable<StreamResponseResponse>) {
    events++;
    // ts-proto turns the `event` oneof into optional fields, one of them set.
    if (event.responseOutputTextDelta) {
      const piece = event.responseOutputTextDelta.delta ?? "";
      process.stdout.write(piece); // each fragment as it arrives
      text += piece;
    }
    final = (event.responseCompleted ?? event.responseIncomplete)?.response ?? final;
  }
  process.stdout.write("\n");
  if (!text || !final) fail(`StreamResponse: no text or no terminal event in ${events} events`);
  console.log(
    `response: ${events} events, status=${final.status}, ` +
      `usage=${final.usage?.inputTokens}+${final.usage?.outputTokens} tokens`,
  );
}

async function createEmbeddings(): Promise<void> {
  const response = await unary(
    embeddings.createEmbeddings.bind(embeddings),
    CreateEmbeddingsRequest.fromPartial({
      model: embeddingModel,
      inputStrings: { values: ["first input", "second input"] },
    }),
  );
  if (response.data.length !== 2) fail(`CreateEmbeddings: ${response.data.length} vectors for 2 inputs`);
  const dimensions = response.data[0].embeddingFloat?.values.length ?? 0;
  if (dimensions === 0) fail("CreateEmbeddings: empty vector");
  console.log(`embeddings: ${response.data.length} vectors of ${dimensions} dimensions`);
}

/** A reply long enough to outlast the short deadline and the cancellation. */
function longStream(options: Partial<CallOptions>): ClientReadableStream<StreamChatCompletionResponse> {
  return chat.streamChatCompletion(
    StreamChatCompletionRequest.fromPartial({
      model: chatModel,
      messages: userMessage("Write a very long story about deadlines."),
      maxTokens: 2000,
    }),
    new Metadata(),
    options,
  );
}

/** Reads a stream to its end, calling `onChunk` with the count of each chunk; returns the error. */
function readUntilError(
  stream: ClientReadableStream<StreamChatCompletionResponse>,
  onChunk: (count: number) => void = () => {},
): Promise<{ error: ServiceError | undefined; chunks: number }> {
  return new Promise((resolve) => {
    let chunks = 0;
    stream.on("data", () => onChunk(++chunks));
    stream.on("error", (error: ServiceError) => resolve({ error, chunks }));
    stream.on("end", () => resolve({ error: undefined, chunks }));
  });
}

async function deadline(): Promise<void> {
  const { error, chunks } = await readUntilError(longStream(withDeadline(SHORT_DEADLINE_MS)));
  if (error?.code !== status.DEADLINE_EXCEEDED) {
    fail(`deadline: want DEADLINE_EXCEEDED, got ${error ? status[error.code] : "OK"}`);
  }
  console.log(
    `deadline: DEADLINE_EXCEEDED after ${chunks} chunks within ${SHORT_DEADLINE_MS}ms, as expected`,
  );
}

async function cancelStream(): Promise<void> {
  const wanted = 3;
  const stream = longStream(withDeadline(CALL_TIMEOUT_MS));
  // The bridge closes the upstream response as soon as the cancellation reaches it.
  const { error } = await readUntilError(stream, (count) => count === wanted && stream.cancel());
  if (error?.code !== status.CANCELLED) {
    fail(`cancel: want CANCELLED, got ${error ? status[error.code] : "OK"}`);
  }
  console.log(`cancel: CANCELLED after ${wanted} chunks, as expected`);
}

/**
 * Decodes grpc-status-details-bin: a google.rpc.Status whose details are Anys of the
 * google.rpc error detail messages.
 */
function richStatus(error: ServiceError): Status | undefined {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  return raw instanceof Buffer ? Status.decode(raw) : undefined;
}

interface Details {
  errorInfo?: ErrorInfo;
  resourceInfo?: ResourceInfo;
  badRequest?: BadRequest;
}

function printDetails(status: Status): Details {
  const found: Details = {};
  for (const any of status.details) {
    const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
    switch (type) {
      case "google.rpc.ErrorInfo": {
        const info = (found.errorInfo = ErrorInfo.decode(any.value));
        const metadata = Object.keys(info.metadata)
          .sort()
          .map((k) => `${k}=${info.metadata[k]}`)
          .join(", ");
        console.log(`error:   ErrorInfo reason=${info.reason} domain=${info.domain} metadata={${metadata}}`);
        break;
      }
      case "google.rpc.RequestInfo":
        console.log(`error:   RequestInfo request_id=${RequestInfo.decode(any.value).requestId}`);
        break;
      case "google.rpc.ResourceInfo": {
        const info = (found.resourceInfo = ResourceInfo.decode(any.value));
        console.log(`error:   ResourceInfo type=${info.resourceType} name=${info.resourceName}`);
        break;
      }
      case "google.rpc.BadRequest": {
        found.badRequest = BadRequest.decode(any.value);
        for (const v of found.badRequest.fieldViolations) {
          console.log(`error:   BadRequest field=${v.field} description=${v.description}`);
        }
        break;
      }
      case "google.rpc.RetryInfo": {
        const delay = RetryInfo.decode(any.value).retryDelay;
        console.log(`error:   RetryInfo retry_delay=${delay?.seconds ?? 0}s+${delay?.nanos ?? 0}ns`);
        break;
      }
      case "google.rpc.QuotaFailure":
        for (const v of QuotaFailure.decode(any.value).violations) {
          console.log(`error:   QuotaFailure subject=${v.subject} description=${v.description}`);
        }
        break;
      default:
        console.log(`error:   ${type} (${any.value.length} bytes)`);
    }
  }
  return found;
}

async function expectError(model: string, want: status): Promise<Details> {
  try {
    await unary(models.retrieveModel.bind(models), RetrieveModelRequest.fromPartial({ model }));
  } catch (error) {
    if (!isServiceError(error) || error.code !== want) throw error;
    const rich = richStatus(error);
    console.log(`error: ${status[error.code]} ${error.details}`);
    if (!rich || rich.message !== error.details) fail("error: no google.rpc.Status matching the status");
    return printDetails(rich);
  }
  return fail(`error: RetrieveModel(${model}) succeeded; want ${status[want]}`);
}

async function errorDetails(): Promise<void> {
  // An unknown model: the upstream answers 404, the bridge NOT_FOUND with ResourceInfo.
  const notFound = await expectError("no-such/model", status.NOT_FOUND);
  if (!notFound.errorInfo || !notFound.resourceInfo) fail("error: NOT_FOUND without ErrorInfo and ResourceInfo");
  // An invalid model id, rejected by the bridge itself with a BadRequest naming the field.
  const invalid = await expectError("../x", status.INVALID_ARGUMENT);
  if (invalid.badRequest?.fieldViolations[0]?.field !== "model") {
    fail("error: INVALID_ARGUMENT without a BadRequest for field model");
  }
}

async function main(): Promise<void> {
  console.log(`bridge: ${address}`);
  await listModels();
  await unaryChat();
  await streamChat();
  await streamResponse();
  await createEmbeddings();
  await deadline();
  await cancelStream();
  await errorDetails();
  console.log("OK: all checks passed");
}

main()
  .catch((error: unknown) => {
    const text = isServiceError(error) ? `${status[error.code]}: ${error.details}` : String(error);
    console.error(`FAIL: ${error instanceof Unexpected ? error.message : text}`);
    process.exitCode = 1;
  })
  .finally(() => {
    models.close();
    chat.close();
    embeddings.close();
    responses.close();
  });
