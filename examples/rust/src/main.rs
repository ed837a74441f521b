//! The aigateway bridge called the way a Rust service does: tonic stubs generated from protos/
//! by tonic-prost-build (build.rs), a deadline on every call, a cancelled stream, and the rich
//! error details of failed calls, decoded with tonic-types.
//!
//! Usage: client [ADDRESS]  (default $BRIDGE_ADDR, else 127.0.0.1:50051)
//!
//! It prints one line per step and exits 1 on the first unexpected outcome.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_types::{ErrorDetail, StatusExt};

pub mod aigateway {
    pub mod v1 {
        tonic::include_proto!("aigateway.v1");
    }
}

use aigateway::v1::chat_service_client::ChatServiceClient;
use aigateway::v1::embeddings_service_client::EmbeddingsServiceClient;
use aigateway::v1::models_service_client::ModelsServiceClient;
use aigateway::v1::responses_service_client::ResponsesServiceClient;
use aigateway::v1::stream_response_response::Event;
use aigateway::v1::{
    chat_message, create_embeddings_request, embedding, stream_response_request, ChatMessage,
    CreateChatCompletionRequest, CreateEmbeddingsRequest, ListModelsRequest, RetrieveModelRequest,
    StreamChatCompletionRequest, StreamChatCompletionResponse, StreamOptions,
    StreamResponseRequest, StringList,
};

/// The deadline of every ordinary call: a client should never wait forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The deadline of the call that is meant to run out.
const SHORT_DEADLINE: Duration = Duration::from_millis(500);

/// A step that did not go as expected: printed as `FAIL: ...`, exit code 1.
struct Unexpected(String);

impl From<Status> for Unexpected {
    fn from(status: Status) -> Self {
        Unexpected(format!(
            "{}: {}",
            code_name(status.code()),
            status.message()
        ))
    }
}

type Step<T = ()> = Result<T, Unexpected>;

fn fail<T>(message: impl Into<String>) -> Step<T> {
    Err(Unexpected(message.into()))
}

/// A request with a deadline (sent as grpc-timeout; the bridge enforces it).
fn with_deadline<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

struct Client {
    models: ModelsServiceClient<Channel>,
    chat: ChatServiceClient<Channel>,
    embeddings: EmbeddingsServiceClient<Channel>,
    responses: ResponsesServiceClient<Channel>,
    chat_model: String,
    embed_model: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| env("BRIDGE_ADDR", "127.0.0.1:50051"));
    match run(&address).await {
        Ok(()) => {
            println!("OK: all checks passed");
            ExitCode::SUCCESS
        }
        Err(Unexpected(message)) => {
            println!();
            eprintln!("FAIL: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(address: &str) -> Step {
    let channel = Channel::from_shared(format!("http://{address}"))
        .map_err(|e| Unexpected(format!("address {address}: {e}")))?
        .connect_lazy();
    let client = Client {
        models: ModelsServiceClient::new(channel.clone()),
        chat: ChatServiceClient::new(channel.clone()),
        embeddings: EmbeddingsServiceClient::new(channel.clone()),
        responses: ResponsesServiceClient::new(channel),
        chat_model: env("CHAT_MODEL", "openai/gpt-4o-mini"),
        embed_model: env("EMBEDDING_MODEL", "openai/text-embedding-3-small"),
    };
    println!("bridge: {address}");
    client.list_models().await?;
    client.unary_chat().await?;
    client.stream_chat().await?;
    client.stream_response().await?;
    client.create_embeddings().await?;
    client.deadline().await?;
    client.cancel_stream().await?;
    client.error_details().await
}

fn user_message(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: Some("user".into()),
        content: Some(chat_message::Content::ContentText(text.into())),
        ..Default::default()
    }]
}

impl Client {
    async fn list_models(&self) -> Step {
        let request = with_deadline(ListModelsRequest::default(), CALL_TIMEOUT);
        let reply = self.models.clone().list_models(request).await?.into_inner();
        if reply.data.is_empty() {
            return fail("ListModels: no models");
        }
        let ids: Vec<&str> = reply.data.iter().map(|m| m.id()).collect();
        println!("models: {}", ids.join(", "));
        Ok(())
    }

    async fn unary_chat(&self) -> Step {
        let request = CreateChatCompletionRequest {
            model: self.chat_model.clone(),
            messages: user_message("Say hello to the Rust client."),
            ..Default::default()
        };
        let reply = self
            .chat
            .clone()
            .create_chat_completion(with_deadline(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        let Some(choice) = reply.choices.first() else {
            return fail("CreateChatCompletion: no choices");
        };
        let content = choice.message.as_ref().map_or("", |m| m.content());
        if content.is_empty() {
            return fail("CreateChatCompletion: no reply");
        }
        let total = reply.usage.as_ref().map_or(0, |u| u.total_tokens());
        println!(
            "unary: {content} (finish_reason={}, total_tokens={total})",
            choice.finish_reason()
        );
        Ok(())
    }

    async fn stream_chat(&self) -> Step {
        let request = StreamChatCompletionRequest {
            model: self.chat_model.clone(),
            messages: user_message("Stream a greeting to the Rust client."),
            stream_options: Some(StreamOptions {
                include_usage: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut stream = self
            .chat
            .clone()
            .stream_chat_completion(with_deadline(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        print!("stream: ");
        let (mut chunks, mut text, mut finish, mut usage) = (0, String::new(), String::new(), None);
        // `message()` is Ok(None) when the stream ended with OK.
        while let Some(chunk) = stream.message().await? {
            chunks += 1;
            for choice in &chunk.choices {
                let token = choice.delta.as_ref().map_or("", |d| d.content());
                print!("{token}"); // each token as it arrives
                let _ = std::io::stdout().flush();
                text.push_str(token);
                if choice.finish_reason.is_some() {
                    finish = choice.finish_reason().to_string();
                }
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
        }
        println!();
        let Some(usage) = usage.filter(|_| !text.is_empty()) else {
            return fail(format!(
                "StreamChatCompletion: no text or no usage in {chunks} chunks"
            ));
        };
        println!(
            "stream: {chunks} chunks, finish_reason={finish}, usage={}+{} tokens",
            usage.prompt_tokens(),
            usage.completion_tokens()
        );
        Ok(())
    }

    /// Streams a Response (the Responses API): one typed event per server-sent event, in order.
    /// A `response.failed` or `error` event ends the call with its mapped status.
    async fn stream_response(&self) -> Step {
        let request = StreamResponseRequest {
            model: self.chat_model.clone(),
            input: Some(stream_response_request::Input::InputText(
                "Stream a response to the Rust client.".into(),
            )),
            ..Default::default()
        };
        let mut stream = self
            .responses
            .clone()
            .stream_response(with_deadline(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        print!("response: ");
        let (mut events, mut text, mut last) = (0, String::new(), None);
        // `message()` is Ok(None) once the stream ended with OK, after the terminal event.
        while let Some(message) = stream.message().await? {
            events += 1;
            match message.event {
                Some(Event::ResponseOutputTextDelta(delta)) => {
                    print!("{}", delta.delta()); // each fragment as it arrives
                    let _ = std::io::stdout().flush();
                    text.push_str(delta.delta());
                }
                Some(Event::ResponseCompleted(state) | Event::ResponseIncomplete(state)) => {
                    last = state.response;
                }
                _ => {} // created, in_progress, output_item.*, content_part.*, ...
            }
        }
        println!();
        let Some(last) = last.filter(|_| !text.is_empty()) else {
            return fail(format!(
                "StreamResponse: no text or no terminal event in {events} events"
            ));
        };
        let usage = last.usage.as_ref();
        println!(
            "response: {events} events, status={}, usage={}+{} tokens",
            last.status(),
            usage.map_or(0, |u| u.input_tokens()),
            usage.map_or(0, |u| u.output_tokens())
        );
        Ok(())
    }

    async fn create_embeddings(&self) -> Step {
        let request = CreateEmbeddingsRequest {
            model: self.embed_model.clone(),
            input: Some(create_embeddings_request::Input::InputStrings(StringList {
                values: vec!["first input".into(), "second input".into()],
            })),
            ..Default::default()
        };
        let reply = self
            .embeddings
            .clone()
            .create_embeddings(with_deadline(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        if reply.data.len() != 2 {
            return fail(format!(
                "CreateEmbeddings: {} vectors for 2 inputs",
                reply.data.len()
            ));
        }
        let dims = match &reply.data[0].embedding {
            Some(embedding::Embedding::EmbeddingFloat(list)) => list.values.len(),
            _ => 0,
        };
        if dims == 0 {
            return fail("CreateEmbeddings: empty vector");
        }
        println!(
            "embeddings: {} vectors of {dims} dimensions",
            reply.data.len()
        );
        Ok(())
    }

    /// A reply long enough to outlast the short deadline and the cancellation.
    async fn long_stream(
        &self,
        deadline: Duration,
    ) -> Result<Streaming<StreamChatCompletionResponse>, Status> {
        let request = StreamChatCompletionRequest {
            model: self.chat_model.clone(),
            messages: user_message("Write a very long story about deadlines."),
            max_tokens: Some(2000),
            ..Default::default()
        };
        let reply = self
            .chat
            .clone()
            .stream_chat_completion(with_deadline(request, deadline))
            .await?;
        Ok(reply.into_inner())
    }

    async fn deadline(&self) -> Step {
        let mut chunks = 0;
        let outcome = match self.long_stream(SHORT_DEADLINE).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(_)) => chunks += 1,
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status),
                }
            },
            Err(status) => Err(status),
        };
        match outcome {
            Err(status) if status.code() == Code::DeadlineExceeded => {
                let ms = SHORT_DEADLINE.as_millis();
                println!(
                    "deadline: DEADLINE_EXCEEDED after {chunks} chunks within {ms}ms, as expected"
                );
                Ok(())
            }
            Err(status) => fail(format!(
                "deadline: want DEADLINE_EXCEEDED, got {}",
                describe(&status)
            )),
            Ok(()) => fail("deadline: the stream finished within the short deadline"),
        }
    }

    async fn cancel_stream(&self) -> Step {
        const WANTED: usize = 3;
        let mut stream = self.long_stream(CALL_TIMEOUT).await?;
        for chunk in 0..WANTED {
            if stream.message().await?.is_none() {
                return fail(format!("cancel: the stream ended at chunk {chunk}"));
            }
        }
        // In tonic, dropping the stream cancels the call (RST_STREAM CANCEL): the call ends
        // as CANCELLED for this client, and the bridge closes the upstream response at once.
        drop(stream);
        println!("cancel: CANCELLED after {WANTED} chunks, as expected");
        Ok(())
    }

    async fn error_details(&self) -> Step {
        // An unknown model: the upstream answers 404, the bridge NOT_FOUND with ResourceInfo.
        let details = self.expect_error("no-such/model", Code::NotFound).await?;
        let has = |f: fn(&ErrorDetail) -> bool| details.iter().any(f);
        if !has(|d| matches!(d, ErrorDetail::ErrorInfo(_)))
            || !has(|d| matches!(d, ErrorDetail::ResourceInfo(_)))
        {
            return fail("error: NOT_FOUND without ErrorInfo and ResourceInfo");
        }
        // An invalid model id, rejected by the bridge itself with a BadRequest naming the field.
        let details = self.expect_error("../x", Code::InvalidArgument).await?;
        let names_model = details.iter().any(|d| {
            matches!(d, ErrorDetail::BadRequest(bad)
                if bad.field_violations.first().is_some_and(|v| v.field == "model"))
        });
        if !names_model {
            return fail("error: INVALID_ARGUMENT without a BadRequest for field model");
        }
        Ok(())
    }

    /// Calls RetrieveModel(model), expects the status `want`, prints it and its details.
    async fn expect_error(&self, model: &str, want: Code) -> Step<Vec<ErrorDetail>> {
        let request = RetrieveModelRequest {
            model: model.into(),
        };
        let status = match self
            .models
            .clone()
            .retrieve_model(with_deadline(request, CALL_TIMEOUT))
            .await
        {
            Ok(_) => return fail(format!("error: RetrieveModel({model}) succeeded")),
            Err(status) => status,
        };
        if status.code() != want {
            return fail(format!(
                "error: want {}, got {}",
                code_name(want),
                describe(&status)
            ));
        }
        println!("error: {} {}", code_name(status.code()), status.message());
        // grpc-status-details-bin, decoded: a google.rpc.Status whose Any details are the
        // google.rpc error detail messages, in the order the bridge sent them.
        let details = status.get_error_details_vec();
        for detail in &details {
            print_detail(detail);
        }
        Ok(details)
    }
}

fn print_detail(detail: &ErrorDetail) {
    match detail {
        ErrorDetail::ErrorInfo(info) => {
            let metadata: BTreeMap<_, _> = info.metadata.iter().collect();
            let pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "error:   ErrorInfo reason={} domain={} metadata={{{}}}",
                info.reason,
                info.domain,
                pairs.join(", ")
            );
        }
        ErrorDetail::RequestInfo(info) => {
            println!("error:   RequestInfo request_id={}", info.request_id)
        }
        ErrorDetail::ResourceInfo(info) => println!(
            "error:   ResourceInfo type={} name={}",
            info.resource_type, info.resource_name
        ),
        ErrorDetail::BadRequest(bad) => {
            for violation in &bad.field_violations {
                println!(
                    "error:   BadRequest field={} description={}",
                    violation.field, violation.description
                );
            }
        }
        ErrorDetail::RetryInfo(info) => {
            println!("error:   RetryInfo retry_delay={:?}", info.retry_delay)
        }
        ErrorDetail::QuotaFailure(failure) => {
            for violation in &failure.violations {
                println!(
                    "error:   QuotaFailure subject={} description={}",
                    violation.subject, violation.description
                );
            }
        }
        other => println!("error:   {other:?}"),
    }
}

fn describe(status: &Status) -> String {
    format!("{} {}", code_name(status.code()), status.message())
}

/// A code spelled the way the gRPC spec does (NOT_FOUND), as every example prints it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn env(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.into())
}
