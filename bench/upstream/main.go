// Command upstream is the benchmark's OpenAI-compatible upstream: canned answers served
// from memory by Go's net/http, so that it costs far less CPU than any client or the bridge
// and never becomes the bottleneck on a 2-core machine.
//
// Models pick the behaviour of POST /v1/chat/completions:
//
//	any model, "stream": false  one chat.completion (about 600 bytes, like OpenAI's)
//	any model, "stream": true   100 chat.completion.chunk events, each flushed, then [DONE]
//	"bench-idle", streamed      the first chunk, then silence until the client goes away
//	"bench-paced-RxN", streamed N chunks at R per second (a model's pace), each chunk's id
//	                            "chatcmpl-t<unix ns when it was written>", then [DONE]
//
// POST /v1/responses answers the Responses API the same way: "stream": false gives one
// `response` object (the 50-token text of the chat answer); "stream": true gives named events
// (`event: <type>` + `data: {...}`) as OpenAI sends them: response.created, in_progress,
// output_item.added, content_part.added, 100 response.output_text.delta events, the .done
// events and response.completed, each written and flushed on its own, no [DONE]. Model
// "bench-paced-RxN" sends N deltas at R per second, as for chat.
//
// POST /v1/embeddings answers 256 vectors of 1536 float32 values, as JSON numbers
// (shortest float32 text, as OpenAI prints them) or, with "encoding_format": "base64",
// as base64 of little-endian float32. The address it listens on is printed on stdout.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

const (
	streamChunks = 100
	embedInputs  = 256
	embedDims    = 1536
)

type request struct {
	Model          string `json:"model"`
	Stream         bool   `json:"stream"`
	EncodingFormat string `json:"encoding_format"`
}

var (
	unaryBody   []byte
	streamBody  []byte
	firstChunk  []byte
	embedFloat  []byte
	embedBase64 []byte
	modelsBody  = []byte(`{"object":"list","data":[{"id":"openai/gpt-4o-mini","object":"model","created":1700000000,"owned_by":"openai"}]}`)
)

func chunk(i int) []byte {
	delta := fmt.Sprintf(`{"content":" token%d"}`, i)
	if i == 0 {
		delta = `{"role":"assistant","content":""}`
	}
	finish := "null"
	if i == streamChunks-1 {
		finish = `"stop"`
	}
	return []byte(fmt.Sprintf(
		`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732000000,`+
			`"model":"openai/gpt-4o-mini","system_fingerprint":"fp_bench","choices":[{"index":0,`+
			`"delta":%s,"logprobs":null,"finish_reason":%s}]}`+"\n\n", delta, finish))
}

func prepare() {
	text := ""
	for i := 0; i < 50; i++ {
		text += " token" + strconv.Itoa(i)
	}
	unaryBody = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1732000000,` +
		`"model":"openai/gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",` +
		`"content":"` + text + `","refusal":null,"annotations":[]},"logprobs":null,` +
		`"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":50,` +
		`"total_tokens":62,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,` +
		`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
		`"service_tier":"default","system_fingerprint":"fp_bench"}`)
	var stream bytes.Buffer
	for i := 0; i < streamChunks; i++ {
		stream.Write(chunk(i))
	}
	streamBody = stream.Bytes()
	firstChunk = chunk(0)

	rng := rand.New(rand.NewSource(7))
	var floats, b64 bytes.Buffer
	head := `{"object":"list","data":[`
	floats.WriteString(head)
	b64.WriteString(head)
	raw := make([]byte, 4*embedDims)
	for i := 0; i < embedInputs; i++ {
		if i > 0 {
			floats.WriteByte(',')
			b64.WriteByte(',')
		}
		obj := `{"object":"embedding","index":` + strconv.Itoa(i) + `,"embedding":`
		floats.WriteString(obj + "[")
		for j := 0; j < embedDims; j++ {
			v := float32(rng.NormFloat64() * 0.03)
			if j > 0 {
				floats.WriteByte(',')
			}
			floats.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
		}
		floats.WriteString("]}")
		b64.WriteString(obj + `"` + base64.StdEncoding.EncodeToString(raw) + `"}`)
	}
	tail := `],"model":"openai/text-embedding-3-small","usage":{"prompt_tokens":2048,"total_tokens":2048}}`
	floats.WriteString(tail)
	b64.WriteString(tail)
	embedFloat = floats.Bytes()
	embedBase64 = b64.Bytes()
}

const respID = "resp_bench"

// responseObject is a `response` whose output is one assistant message holding `text`
// (none while in progress).
func responseObject(status, text string, done bool) string {
	output, usage := "[]", "null"
	if done {
		output = `[{"id":"msg_bench","type":"message","status":"completed","role":"assistant",` +
			`"content":[{"type":"output_text","text":` + strconv.Quote(text) +
			`,"annotations":[],"logprobs":[]}]}]`
		usage = `{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},` +
			`"output_tokens":50,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":62}`
	}
	return `{"id":"` + respID + `","object":"response","created_at":1732000000,"status":"` +
		status + `","background":false,"error":null,"incomplete_details":null,` +
		`"instructions":null,"max_output_tokens":null,"model":"openai/gpt-4o-mini","output":` +
		output + `,"parallel_tool_calls":true,"previous_response_id":null,` +
		`"reasoning":{"effort":null,"summary":null},"store":true,"temperature":0.0,` +
		`"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,` +
		`"truncation":"disabled","usage":` + usage + `,"metadata":{}}`
}

// respEvent is one named SSE event of a Responses stream.
func respEvent(kind string, seq int, fields string) []byte {
	return []byte("event: " + kind + "\ndata: {\"type\":\"" + kind + "\",\"sequence_number\":" +
		strconv.Itoa(seq) + "," + fields + "}\n\n")
}

const msgWhere = `"item_id":"msg_bench","output_index":0,"content_index":0`

func respDelta(seq, i int) []byte {
	return respEvent("response.output_text.delta", seq,
		msgWhere+`,"delta":" token`+strconv.Itoa(i)+`","logprobs":[]`)
}

// respHead: the events before the first delta; respTail: those after `n` deltas.
func respHead() [][]byte {
	return [][]byte{
		respEvent("response.created", 0, `"response":`+responseObject("in_progress", "", false)),
		respEvent("response.in_progress", 1, `"response":`+responseObject("in_progress", "", false)),
		respEvent("response.output_item.added", 2, `"output_index":0,"item":{"id":"msg_bench",`+
			`"type":"message","status":"in_progress","role":"assistant","content":[]}`),
		respEvent("response.content_part.added", 3, msgWhere+
			`,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}`),
	}
}

func respTail(n int) [][]byte {
	text := ""
	for i := 0; i < n; i++ {
		text += " token" + strconv.Itoa(i)
	}
	q := strconv.Quote(text)
	seq := 4 + n
	return [][]byte{
		respEvent("response.output_text.done", seq, msgWhere+`,"text":`+q+`,"logprobs":[]`),
		respEvent("response.content_part.done", seq+1, msgWhere+
			`,"part":{"type":"output_text","text":`+q+`,"annotations":[],"logprobs":[]}`),
		respEvent("response.output_item.done", seq+2, `"output_index":0,"item":{"id":"msg_bench",`+
			`"type":"message","status":"completed","role":"assistant","content":[{"type":`+
			`"output_text","text":`+q+`,"annotations":[],"logprobs":[]}]}`),
		respEvent("response.completed", seq+3, `"response":`+responseObject("completed", text, true)),
	}
}

var (
	respUnary  []byte
	respEvents [][]byte // the whole burst stream, one element per event
)

func prepareResponses() {
	text := ""
	for i := 0; i < 50; i++ {
		text += " token" + strconv.Itoa(i)
	}
	respUnary = []byte(responseObject("completed", text, true))
	respEvents = respHead()
	for i := 0; i < streamChunks; i++ {
		respEvents = append(respEvents, respDelta(4+i, i))
	}
	respEvents = append(respEvents, respTail(streamChunks)...)
}

func responses(w http.ResponseWriter, r *http.Request) {
	req, ok := readRequest(w, r)
	if !ok {
		return
	}
	if !req.Stream {
		writeJSON(w, respUnary)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["X-Request-Id"] = []string{"req_bench"}
	flusher := w.(http.Flusher)
	var rate, count int
	if n, _ := fmt.Sscanf(req.Model, "bench-paced-%dx%d", &rate, &count); n == 2 && rate > 0 {
		for _, e := range respHead() {
			w.Write(e)
		}
		flusher.Flush()
		interval := time.Second / time.Duration(rate)
		begin := time.Now()
		for i := 0; i < count; i++ {
			if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(wait):
				}
			}
			w.Write(respDelta(4+i, i))
			flusher.Flush()
		}
		for _, e := range respTail(count) {
			w.Write(e)
		}
		return
	}
	// One write and flush per event, as a model server emits tokens.
	for _, e := range respEvents {
		w.Write(e)
		flusher.Flush()
	}
}

func writeJSON(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["X-Request-Id"] = []string{"req_bench"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.Write(body)
}

func readRequest(w http.ResponseWriter, r *http.Request) (request, bool) {
	var req request
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, `{"error":{"message":"bad JSON","type":"invalid_request_error"}}`, 400)
		return req, false
	}
	return req, true
}

func chat(w http.ResponseWriter, r *http.Request) {
	req, ok := readRequest(w, r)
	if !ok {
		return
	}
	if !req.Stream {
		writeJSON(w, unaryBody)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["X-Request-Id"] = []string{"req_bench"}
	flusher := w.(http.Flusher)
	if req.Model == "bench-idle" {
		w.Write(firstChunk)
		flusher.Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Minute):
		}
		return
	}
	var rate, count int
	if n, _ := fmt.Sscanf(req.Model, "bench-paced-%dx%d", &rate, &count); n == 2 && rate > 0 {
		paced(w, flusher, r, rate, count)
		return
	}
	// One write and flush per event, as a model server emits tokens.
	start := 0
	for i := 0; i < streamChunks; i++ {
		end := bytes.Index(streamBody[start:], []byte("\n\n")) + start + 2
		w.Write(streamBody[start:end])
		flusher.Flush()
		start = end
	}
	w.Write([]byte("data: [DONE]\n\n"))
}

// paced streams `count` chunks on a fixed schedule of `rate` per second from the first one
// (lateness does not accumulate), each stamped with the wall-clock time it was written, so
// a client on the same host can tell how long the chunk took to reach it.
func paced(w http.ResponseWriter, flusher http.Flusher, r *http.Request, rate, count int) {
	interval := time.Second / time.Duration(rate)
	begin := time.Now()
	for i := 0; i < count; i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(wait):
			}
		}
		finish := "null"
		if i == count-1 {
			finish = `"stop"`
		}
		fmt.Fprintf(w, `data: {"id":"chatcmpl-t%d","object":"chat.completion.chunk",`+
			`"created":1732000000,"model":"openai/gpt-4o-mini","system_fingerprint":"fp_bench",`+
			`"choices":[{"index":0,"delta":{"content":" token%d"},"logprobs":null,`+
			`"finish_reason":%s}]}`+"\n\n", time.Now().UnixNano(), i, finish)
		flusher.Flush()
	}
	w.Write([]byte("data: [DONE]\n\n"))
}

func embeddings(w http.ResponseWriter, r *http.Request) {
	req, ok := readRequest(w, r)
	if !ok {
		return
	}
	if req.EncodingFormat == "base64" {
		writeJSON(w, embedBase64)
		return
	}
	writeJSON(w, embedFloat)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HOST:PORT to listen on")
	flag.Parse()
	prepare()
	prepareResponses()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", chat)
	mux.HandleFunc("POST /v1/embeddings", embeddings)
	mux.HandleFunc("POST /v1/responses", responses)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, modelsBody)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if err := server.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
