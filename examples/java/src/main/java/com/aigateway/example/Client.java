package com.aigateway.example;

import com.aigateway.v1.ChatMessage;
import com.aigateway.v1.ChatServiceGrpc;
import com.aigateway.v1.CreateChatCompletionRequest;
import com.aigateway.v1.CreateChatCompletionResponse;
import com.aigateway.v1.CreateEmbeddingsRequest;
import com.aigateway.v1.CreateEmbeddingsResponse;
import com.aigateway.v1.EmbeddingsServiceGrpc;
import com.aigateway.v1.ListModelsRequest;
import com.aigateway.v1.ListModelsResponse;
import com.aigateway.v1.Model;
import com.aigateway.v1.ModelsServiceGrpc;
import com.aigateway.v1.ResponseObject;
import com.aigateway.v1.ResponsesServiceGrpc;
import com.aigateway.v1.RetrieveModelRequest;
import com.aigateway.v1.StreamChatCompletionRequest;
import com.aigateway.v1.StreamChatCompletionResponse;
import com.aigateway.v1.StreamOptions;
import com.aigateway.v1.StreamResponseRequest;
import com.aigateway.v1.StreamResponseResponse;
import com.aigateway.v1.StringList;
import com.aigateway.v1.Usage;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RequestInfo;
import com.google.rpc.ResourceInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.Iterator;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

/**
 * A Java client of the aigateway bridge: grpc-java blocking stubs generated from protos/, a
 * deadline on every call, a cancelled stream, and the rich error details of failed calls.
 *
 * <p>Usage: {@code java -jar target/aigateway-example.jar [ADDRESS]} (default $BRIDGE_ADDR, else
 * 127.0.0.1:50051). It prints one line per step and exits 1 on the first unexpected outcome.
 */
public final class Client {
  /** Deadline of every ordinary call, in seconds: a client should never wait forever. */
  private static final long CALL_TIMEOUT_SECONDS = 30;
  /** Deadline of the call that is meant to run out, in milliseconds. */
  private static final long SHORT_DEADLINE_MS = 500;

  /** An outcome the example did not expect. */
  private static final class Unexpected extends RuntimeException {
    Unexpected(String message) {
      super(message);
    }
  }

  private final ModelsServiceGrpc.ModelsServiceBlockingStub models;
  private final ChatServiceGrpc.ChatServiceBlockingStub chat;
  private final EmbeddingsServiceGrpc.EmbeddingsServiceBlockingStub embeddings;
  private final ResponsesServiceGrpc.ResponsesServiceBlockingStub responses;
  private final String chatModel = env("CHAT_MODEL", "openai/gpt-4o-mini");
  private final String embeddingModel = env("EMBEDDING_MODEL", "openai/text-embedding-3-small");

  private Client(ManagedChannel channel) {
    models = ModelsServiceGrpc.newBlockingStub(channel);
    chat = ChatServiceGrpc.newBlockingStub(channel);
    embeddings = EmbeddingsServiceGrpc.newBlockingStub(channel);
    responses = ResponsesServiceGrpc.newBlockingStub(channel);
  }

  public static void main(String[] args) throws InterruptedException {
    String address = args.length > 0 ? args[0] : env("BRIDGE_ADDR", "127.0.0.1:50051");
    ManagedChannel channel =
        Grpc.newChannelBuilder(address, InsecureChannelCredentials.create()).build();
    int exitCode = 0;
    try {
      System.out.println("bridge: " + address);
      Client client = new Client(channel);
      client.listModels();
      client.unaryChat();
      client.streamChat();
      client.streamResponse();
      client.createEmbeddings();
      client.deadline();
      client.cancelStream();
      client.errorDetails();
      System.out.println("OK: all checks passed");
    } catch (Unexpected e) {
      System.err.println("FAIL: " + e.getMessage());
      exitCode = 1;
    } catch (StatusRuntimeException e) {
      System.err.println("FAIL: " + e.getStatus());
      exitCode = 1;
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(exitCode);
  }

  private static ChatMessage userMessage(String text) {
    return ChatMessage.newBuilder().setRole("user").setContentText(text).build();
  }

  private void listModels() {
    ListModelsResponse response =
        models
            .withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .listModels(ListModelsRequest.getDefaultInstance());
    if (response.getDataCount() == 0) {
      throw new Unexpected("ListModels: no models");
    }
    String ids = response.getDataList().stream().map(Model::getId).collect(Collectors.joining(", "));
    System.out.println("models: " + ids);
  }

  private void unaryChat() {
    CreateChatCompletionResponse response =
        chat.withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .createChatCompletion(
                CreateChatCompletionRequest.newBuilder()
                    .setModel(chatModel)
                    .addMessages(userMessage("Say hello to the Java client."))
                    .build());
    if (response.getChoicesCount() == 0
        || response.getChoices(0).getMessage().getContent().isEmpty()) {
      throw new Unexpected("CreateChatCompletion: no reply in " + response);
    }
    var choice = response.getChoices(0);
    System.out.printf(
        "unary: %s (finish_reason=%s, total_tokens=%d)%n",
        choice.getMessage().getContent(),
        choice.getFinishReason(),
        response.getUsage().getTotalTokens());
  }

  private void streamChat() {
    Iterator<StreamChatCompletionResponse> stream =
        chat.withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .streamChatCompletion(
                StreamChatCompletionRequest.newBuilder()
                    .setModel(chatModel)
                    .addMessages(userMessage("Stream a greeting to the Java client."))
                    .setStreamOptions(StreamOptions.newBuilder().setIncludeUsage(true))
                    .build());
    System.out.print("stream: ");
    int chunks = 0;
    StringBuilder text = new StringBuilder();
    String finish = "";
    Usage usage = null;
    while (stream.hasNext()) { // false once the stream ends with OK; a failure throws
      StreamChatCompletionResponse chunk = stream.next();
      chunks++;
      for (var choice : chunk.getChoicesList()) {
        System.out.print(choice.getDelta().getContent()); // each token as it arrives
        System.out.flush();
        text.append(choice.getDelta().getContent());
        if (choice.hasFinishReason()) {
          finish = choice.getFinishReason();
        }
      }
      if (chunk.hasUsage()) {
        usage = chunk.getUsage();
      }
    }
    System.out.println();
    if (text.length() == 0 || usage == null) {
      throw new Unexpected("StreamChatCompletion: no text or no usage in " + chunks + " chunks");
    }
    System.out.printf(
        "stream: %d chunks, finish_reason=%s, usage=%d+%d tokens%n",
        chunks, finish, usage.getPromptTokens(), usage.getCompletionTokens());
  }

  /**
   * Streams a Response (the Responses API): one typed event per server-sent event, in order. A
   * response.failed or error event ends the call with its mapped status (hasNext throws).
   */
  private void streamResponse() {
    Iterator<StreamResponseResponse> stream =
        responses
            .withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .streamResponse(
                StreamResponseRequest.newBuilder()
                    .setModel(chatModel)
                    .setInputText("Stream a response to the Java client.")
                    .build());
    System.out.print("response: ");
    int events = 0;
    StringBuilder text = new StringBuilder();
    ResponseObject fin = null;
    while (stream.hasNext()) { // false once the stream ends with OK; a failure throws
      StreamResponseResponse event = stream.next();
      events++;
      switch (event.getEventCase()) {
        case RESPONSE_OUTPUT_TEXT_DELTA -> {
          String delta = event.getResponseOutputTextDelta().getDelta();
          System.out.print(delta); // each fragment as it arrives
          System.out.flush();
          text.append(delta);
        }
        case RESPONSE_COMPLETED -> fin = event.getResponseCompleted().getResponse();
        case RESPONSE_INCOMPLETE -> fin = event.getResponseIncomplete().getResponse();
        default -> {} // created, in_progress, output_item.*, content_part.*, ...
      }
    }
    System.out.println();
    if (text.length() == 0 || fin == null) {
      throw new Unexpected("StreamResponse: no text or no terminal event in " + events + " events");
    }
    System.out.printf(
        "response: %d events, status=%s, usage=%d+%d tokens%n",
        events, fin.getStatus(), fin.getUsage().getInputTokens(), fin.getUsage().getOutputTokens());
  }

  private void createEmbeddings() {
    CreateEmbeddingsResponse response =
        embeddings
            .withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .createEmbeddings(
                CreateEmbeddingsRequest.newBuilder()
                    .setModel(embeddingModel)
                    .setInputStrings(
                        StringList.newBuilder().addValues("first input").addValues("second input"))
                    .build());
    if (response.getDataCount() != 2) {
      throw new Unexpected("CreateEmbeddings: " + response.getDataCount() + " vectors for 2 inputs");
    }
    int dimensions = response.getData(0).getEmbeddingFloat().getValuesCount();
    if (dimensions == 0) {
      throw new Unexpected("CreateEmbeddings: empty vector");
    }
    System.out.printf(
        "embeddings: %d vectors of %d dimensions%n", response.getDataCount(), dimensions);
  }

  /** A reply long enough to outlast the short deadline and the cancellation. */
  private static StreamChatCompletionRequest longStory(String model) {
    return StreamChatCompletionRequest.newBuilder()
        .setModel(model)
        .addMessages(userMessage("Write a very long story about deadlines."))
        .setMaxTokens(2000)
        .build();
  }

  private void deadline() {
    int chunks = 0;
    try {
      Iterator<StreamChatCompletionResponse> stream =
          chat.withDeadlineAfter(SHORT_DEADLINE_MS, TimeUnit.MILLISECONDS)
              .streamChatCompletion(longStory(chatModel));
      while (stream.hasNext()) {
        stream.next();
        chunks++;
      }
      throw new Unexpected("deadline: want DEADLINE_EXCEEDED, got OK");
    } catch (StatusRuntimeException e) {
      if (e.getStatus().getCode() != Status.Code.DEADLINE_EXCEEDED) {
        throw new Unexpected("deadline: want DEADLINE_EXCEEDED, got " + e.getStatus());
      }
    }
    System.out.printf(
        "deadline: DEADLINE_EXCEEDED after %d chunks within %dms, as expected%n",
        chunks, SHORT_DEADLINE_MS);
  }

  private void cancelStream() {
    final int wanted = 3;
    // A blocking stream is cancelled through the gRPC Context it was started in; the bridge
    // then closes the upstream response at once.
    try (Context.CancellableContext context = Context.current().withCancellation()) {
      Iterator<StreamChatCompletionResponse> stream =
          context.call(
              () ->
                  chat.withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
                      .streamChatCompletion(longStory(chatModel)));
      for (int i = 0; i < wanted; i++) {
        stream.next();
      }
      context.cancel(null);
      try {
        // Chunks that arrived before the cancellation may still be read; then the status comes.
        while (stream.hasNext()) {
          stream.next();
        }
        throw new Unexpected("cancel: want CANCELLED, the stream ended normally");
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.CANCELLED) {
          throw new Unexpected("cancel: want CANCELLED, got " + e.getStatus());
        }
      }
    } catch (Exception e) {
      if (e instanceof RuntimeException runtime) {
        throw runtime;
      }
      throw new Unexpected("cancel: " + e);
    }
    System.out.printf("cancel: CANCELLED after %d chunks, as expected%n", wanted);
  }

  private void errorDetails() {
    // An unknown model: the upstream answers 404, the bridge NOT_FOUND with ResourceInfo.
    com.google.rpc.Status notFound = expectError("no-such/model", Status.Code.NOT_FOUND);
    if (find(notFound, ErrorInfo.class) == null || find(notFound, ResourceInfo.class) == null) {
      throw new Unexpected("error: NOT_FOUND without ErrorInfo and ResourceInfo");
    }
    // An invalid model id, rejected by the bridge itself with a BadRequest naming the field.
    com.google.rpc.Status invalid = expectError("../x", Status.Code.INVALID_ARGUMENT);
    BadRequest bad = find(invalid, BadRequest.class);
    if (bad == null
        || bad.getFieldViolationsCount() == 0
        || !bad.getFieldViolations(0).getField().equals("model")) {
      throw new Unexpected("error: INVALID_ARGUMENT without a BadRequest for field model");
    }
  }

  private com.google.rpc.Status expectError(String model, Status.Code want) {
    try {
      models
          .withDeadlineAfter(CALL_TIMEOUT_SECONDS, TimeUnit.SECONDS)
          .retrieveModel(RetrieveModelRequest.newBuilder().setModel(model).build());
    } catch (StatusRuntimeException e) {
      if (e.getStatus().getCode() != want) {
        throw new Unexpected("error: want " + want + ", got " + e.getStatus());
      }
      // grpc-status-details-bin, decoded: a google.rpc.Status with Any details.
      com.google.rpc.Status rich = StatusProto.fromThrowable(e);
      System.out.printf("error: %s %s%n", want, e.getStatus().getDescription());
      if (rich == null || !rich.getMessage().equals(e.getStatus().getDescription())) {
        throw new Unexpected("error: no google.rpc.Status matching the status");
      }
      printDetails(rich);
      return rich;
    }
    throw new Unexpected("error: RetrieveModel(" + model + ") succeeded; want " + want);
  }

  private static <T extends com.google.protobuf.Message> T find(
      com.google.rpc.Status status, Class<T> type) {
    for (Any any : status.getDetailsList()) {
      if (any.is(type)) {
        try {
          return any.unpack(type);
        } catch (InvalidProtocolBufferException e) {
          throw new Unexpected("error: undecodable " + type.getSimpleName() + ": " + e);
        }
      }
    }
    return null;
  }

  private static void printDetails(com.google.rpc.Status status) {
    for (Any any : status.getDetailsList()) {
      try {
        if (any.is(ErrorInfo.class)) {
          ErrorInfo info = any.unpack(ErrorInfo.class);
          Map<String, String> metadata = new TreeMap<>(info.getMetadataMap());
          String joined =
              metadata.entrySet().stream()
                  .map(e -> e.getKey() + "=" + e.getValue())
                  .collect(Collectors.joining(", "));
          System.out.printf(
              "error:   ErrorInfo reason=%s domain=%s metadata={%s}%n",
              info.getReason(), info.getDomain(), joined);
        } else if (any.is(RequestInfo.class)) {
          System.out.printf(
              "error:   RequestInfo request_id=%s%n",
              any.unpack(RequestInfo.class).getRequestId());
        } else if (any.is(ResourceInfo.class)) {
          ResourceInfo info = any.unpack(ResourceInfo.class);
          System.out.printf(
              "error:   ResourceInfo type=%s name=%s%n",
              info.getResourceType(), info.getResourceName());
        } else if (any.is(BadRequest.class)) {
          for (var v : any.unpack(BadRequest.class).getFieldViolationsList()) {
            System.out.printf(
                "error:   BadRequest field=%s description=%s%n", v.getField(), v.getDescription());
          }
        } else if (any.is(RetryInfo.class)) {
          var delay = any.unpack(RetryInfo.class).getRetryDelay();
          System.out.printf(
              "error:   RetryInfo retry_delay=%ds+%dns%n", delay.getSeconds(), delay.getNanos());
        } else if (any.is(QuotaFailure.class)) {
          for (var v : any.unpack(QuotaFailure.class).getViolationsList()) {
            System.out.printf(
                "error:   QuotaFailure subject=%s description=%s%n",
                v.getSubject(), v.getDescription());
          }
        } else {
          System.out.printf("error:   %s%n", any.getTypeUrl());
        }
      } catch (InvalidProtocolBufferException e) {
        throw new Unexpected("error: undecodable detail " + any.getTypeUrl() + ": " + e);
      }
    }
  }

  private static String env(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }
}
