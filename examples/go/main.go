// Command client calls the aigateway bridge the way a Go service does: with stubs generated
// from protos/ by protoc-gen-go and protoc-gen-go-grpc, a deadline on every call, a cancelled
// stream, and the rich error details of failed calls.
//
// Usage: client [ADDRESS]  (default $BRIDGE_ADDR, else 127.0.0.1:50051)
//
// It prints one line per step and exits 1 on the first unexpected outcome.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	aigatewayv1 "github.com/aigateway-bridge/aigateway-bridge/gen/go/aigateway/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// callTimeout is the deadline of every ordinary call: a client should never wait forever.
const callTimeout = 30 * time.Second

// shortDeadline is the deadline of the call that is meant to run out.
const shortDeadline = 500 * time.Millisecond

type client struct {
	models     aigatewayv1.ModelsServiceClient
	chat       aigatewayv1.ChatServiceClient
	embeddings aigatewayv1.EmbeddingsServiceClient
	responses  aigatewayv1.ResponsesServiceClient
	chatModel  string
	embedModel string
}

func main() {
	address := env("BRIDGE_ADDR", "127.0.0.1:50051")
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("connect to %s: %v", address, err)
	}
	defer conn.Close()
	c := &client{
		models:     aigatewayv1.NewModelsServiceClient(conn),
		chat:       aigatewayv1.NewChatServiceClient(conn),
		embeddings: aigatewayv1.NewEmbeddingsServiceClient(conn),
		responses:  aigatewayv1.NewResponsesServiceClient(conn),
		chatModel:  env("CHAT_MODEL", "openai/gpt-4o-mini"),
		embedModel: env("EMBEDDING_MODEL", "openai/text-embedding-3-small"),
	}
	fmt.Printf("bridge: %s\n", address)
	c.listModels()
	c.unaryChat()
	c.streamChat()
	c.streamResponse()
	c.createEmbeddings()
	c.deadline()
	c.cancelStream()
	c.errorDetails()
	fmt.Println("OK: all checks passed")
}

func (c *client) listModels() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.models.ListModels(ctx, &aigatewayv1.ListModelsRequest{})
	if err != nil {
		fail("ListModels: %v", err)
	}
	if len(resp.GetData()) == 0 {
		fail("ListModels: no models")
	}
	ids := make([]string, 0, len(resp.GetData()))
	for _, m := range resp.GetData() {
		ids = append(ids, m.GetId())
	}
	fmt.Printf("models: %s\n", strings.Join(ids, ", "))
}

func userMessage(text string) []*aigatewayv1.ChatMessage {
	return []*aigatewayv1.ChatMessage{{
		Role:    proto.String("user"),
		Content: &aigatewayv1.ChatMessage_ContentText{ContentText: text},
	}}
}

func (c *client) unaryChat() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.chat.CreateChatCompletion(ctx, &aigatewayv1.CreateChatCompletionRequest{
		Model:    c.chatModel,
		Messages: userMessage("Say hello to the Go client."),
	})
	if err != nil {
		fail("CreateChatCompletion: %v", err)
	}
	if len(resp.GetChoices()) == 0 || resp.GetChoices()[0].GetMessage().GetContent() == "" {
		fail("CreateChatCompletion: no reply in %v", resp)
	}
	choice := resp.GetChoices()[0]
	fmt.Printf("unary: %s (finish_reason=%s, total_tokens=%d)\n",
		choice.GetMessage().GetContent(), choice.GetFinishReason(), resp.GetUsage().GetTotalTokens())
}

func (c *client) streamChat() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := c.chat.StreamChatCompletion(ctx, &aigatewayv1.StreamChatCompletionRequest{
		Model:         c.chatModel,
		Messages:      userMessage("Stream a greeting to the Go client."),
		StreamOptions: &aigatewayv1.StreamOptions{IncludeUsage: proto.Bool(true)},
	})
	if err != nil {
		fail("StreamChatCompletion: %v", err)
	}
	fmt.Print("stream: ")
	var chunks int
	var text strings.Builder
	var finish string
	var usage *aigatewayv1.Usage
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // the stream ended with OK
		}
		if err != nil {
			fail("StreamChatCompletion after %d chunks: %v", chunks, err)
		}
		chunks++
		for _, choice := range chunk.GetChoices() {
			fmt.Print(choice.GetDelta().GetContent()) // each token as it arrives
			text.WriteString(choice.GetDelta().GetContent())
			if choice.FinishReason != nil {
				finish = choice.GetFinishReason()
			}
		}
		if chunk.GetUsage() != nil {
			usage = chunk.GetUsage()
		}
	}
	fmt.Println()
	if text.Len() == 0 || usage == nil {
		fail("StreamChatCompletion: no text or no usage in %d chunks", chunks)
	}
	fmt.Printf("stream: %d chunks, finish_reason=%s, usage=%d+%d tokens\n",
		chunks, finish, usage.GetPromptTokens(), usage.GetCompletionTokens())
}

// streamResponse streams a Response (the Responses API): one typed event per server-sent
// event, in order. A response.failed or error event ends the call with its mapped status.
func (c *client) streamResponse() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := c.responses.StreamResponse(ctx, &aigatewayv1.StreamResponseRequest{
		Model: c.chatModel,
		Input: &aigatewayv1.StreamResponseRequest_InputText{InputText: "Stream a response to the Go client."},
	})
	if err != nil {
		fail("StreamResponse: %v", err)
	}
	fmt.Print("response: ")
	var events int
	var text strings.Builder
	var final *aigatewayv1.ResponseObject
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // the stream ended with OK, after response.completed or response.incomplete
		}
		if err != nil {
			fail("StreamResponse after %d events: %v", events, err)
		}
		events++
		switch e := event.GetEvent().(type) {
		case *aigatewayv1.StreamResponseResponse_ResponseOutputTextDelta:
			fmt.Print(e.ResponseOutputTextDelta.GetDelta()) // each fragment as it arrives
			text.WriteString(e.ResponseOutputTextDelta.GetDelta())
		case *aigatewayv1.StreamResponseResponse_ResponseCompleted:
			final = e.ResponseCompleted.GetResponse()
		case *aigatewayv1.StreamResponseResponse_ResponseIncomplete:
			final = e.ResponseIncomplete.GetResponse()
		}
	}
	fmt.Println()
	if text.Len() == 0 || final == nil {
		fail("StreamResponse: no text or no terminal event in %d events", events)
	}
	fmt.Printf("response: %d events, status=%s, usage=%d+%d tokens\n",
		events, final.GetStatus(), final.GetUsage().GetInputTokens(), final.GetUsage().GetOutputTokens())
}

func (c *client) createEmbeddings() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.embeddings.CreateEmbeddings(ctx, &aigatewayv1.CreateEmbeddingsRequest{
		Model: c.embedModel,
		Input: &aigatewayv1.CreateEmbeddingsRequest_InputStrings{
			InputStrings: &aigatewayv1.StringList{Values: []string{"first input", "second input"}},
		},
	})
	if err != nil {
		fail("CreateEmbeddings: %v", err)
	}
	if len(resp.GetData()) != 2 {
		fail("CreateEmbeddings: %d vectors for 2 inputs", len(resp.GetData()))
	}
	dims := len(resp.GetData()[0].GetEmbeddingFloat().GetValues())
	if dims == 0 {
		fail("CreateEmbeddings: empty vector")
	}
	fmt.Printf("embeddings: %d vectors of %d dimensions\n", len(resp.GetData()), dims)
}

// longStream asks for a reply long enough to outlast the short deadline and the cancellation.
func (c *client) longStream(ctx context.Context) (aigatewayv1.ChatService_StreamChatCompletionClient, error) {
	return c.chat.StreamChatCompletion(ctx, &aigatewayv1.StreamChatCompletionRequest{
		Model:     c.chatModel,
		Messages:  userMessage("Write a very long story about deadlines."),
		MaxTokens: proto.Int32(2000),
	})
}

func (c *client) deadline() {
	ctx, cancel := context.WithTimeout(context.Background(), shortDeadline)
	defer cancel()
	stream, err := c.longStream(ctx)
	chunks := 0
	for err == nil {
		_, err = stream.Recv()
		if err == nil {
			chunks++
		}
	}
	if code := status.Code(err); code != codes.DeadlineExceeded {
		fail("deadline: want DEADLINE_EXCEEDED, got %v: %v", code, err)
	}
	fmt.Printf("deadline: DEADLINE_EXCEEDED after %d chunks within %v, as expected\n", chunks, shortDeadline)
}

func (c *client) cancelStream() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := c.longStream(ctx)
	if err != nil {
		fail("cancel: %v", err)
	}
	const wanted = 3
	for chunks := 0; chunks < wanted; chunks++ {
		if _, err := stream.Recv(); err != nil {
			fail("cancel: chunk %d: %v", chunks, err)
		}
	}
	cancel() // the bridge closes the upstream response at once
	// Chunks that arrived before the cancellation may still be read; then the status comes.
	for err == nil {
		_, err = stream.Recv()
	}
	if code := status.Code(err); code != codes.Canceled {
		fail("cancel: want CANCELLED, got %v: %v", code, err)
	}
	fmt.Printf("cancel: CANCELLED after %d chunks, as expected\n", wanted)
}

func (c *client) errorDetails() {
	// An unknown model: the upstream answers 404, the bridge NOT_FOUND with ResourceInfo.
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := c.models.RetrieveModel(ctx, &aigatewayv1.RetrieveModelRequest{Model: "no-such/model"})
	st := expectError(err, codes.NotFound)
	printDetails(st)
	if detail[*errdetails.ErrorInfo](st) == nil || detail[*errdetails.ResourceInfo](st) == nil {
		fail("error: NOT_FOUND without ErrorInfo and ResourceInfo")
	}

	// An invalid model id, rejected by the bridge itself with a BadRequest naming the field.
	_, err = c.models.RetrieveModel(ctx, &aigatewayv1.RetrieveModelRequest{Model: "../x"})
	st = expectError(err, codes.InvalidArgument)
	printDetails(st)
	bad := detail[*errdetails.BadRequest](st)
	if bad == nil || len(bad.GetFieldViolations()) == 0 || bad.GetFieldViolations()[0].GetField() != "model" {
		fail("error: INVALID_ARGUMENT without a BadRequest for field model")
	}
}

func expectError(err error, want codes.Code) *status.Status {
	st, ok := status.FromError(err)
	if !ok || st.Code() != want {
		fail("error: want %v, got %v", want, err)
	}
	fmt.Printf("error: %s %s\n", codeName(st.Code()), st.Message())
	return st
}

// detail returns the first detail of type T of the status, or the zero value.
func detail[T any](st *status.Status) T {
	var zero T
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	return zero
}

// printDetails decodes grpc-status-details-bin: a google.rpc.Status whose details are Anys
// of the google.rpc error detail messages (registered by importing errdetails).
func printDetails(st *status.Status) {
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Printf("error:   ErrorInfo reason=%s domain=%s metadata=%s\n",
				d.GetReason(), d.GetDomain(), sortedMap(d.GetMetadata()))
		case *errdetails.RequestInfo:
			fmt.Printf("error:   RequestInfo request_id=%s\n", d.GetRequestId())
		case *errdetails.ResourceInfo:
			fmt.Printf("error:   ResourceInfo type=%s name=%s\n", d.GetResourceType(), d.GetResourceName())
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Printf("error:   BadRequest field=%s description=%s\n", v.GetField(), v.GetDescription())
			}
		case *errdetails.RetryInfo:
			fmt.Printf("error:   RetryInfo retry_delay=%v\n", d.GetRetryDelay().AsDuration())
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Printf("error:   QuotaFailure subject=%s description=%s\n", v.GetSubject(), v.GetDescription())
			}
		case error: // a detail whose type this binary does not know
			fmt.Printf("error:   undecodable detail: %v\n", d)
		default:
			fmt.Printf("error:   %T %v\n", d, d)
		}
	}
}

func sortedMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// codeName spells a code the way the gRPC spec does (NOT_FOUND), as every example prints it.
func codeName(code codes.Code) string {
	names := map[codes.Code]string{
		codes.NotFound: "NOT_FOUND", codes.InvalidArgument: "INVALID_ARGUMENT",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.Canceled: "CANCELLED",
	}
	if name, ok := names[code]; ok {
		return name
	}
	return code.String()
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}
