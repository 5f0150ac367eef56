// Command bertserve-call calls a bertserve server over gRPC and prints the
// answer as one JSON object on stdout.
//
// It is the Go client example of bertserve: the stubs come from the .proto
// files in protos/bertserve/v1 (see ../../generate.sh), the gRPC and protobuf
// libraries from Debian's packages, and nothing is downloaded.
//
//	bertserve-call --target localhost:50051 --mode fill-mask --text "The capital of France is [MASK]."
//	bertserve-call --mode next-sentence --first "He went home." --second "He slept."
//	bertserve-call --mode sentiment --text "A great film." --text "A dull film."
//	bertserve-call --mode answer --question "Who went home?" --context "John went home at night."
//	bertserve-call --mode answer-spans --question "Who went?" --context "Zoë 😀 went home." --top-k 5
//	bertserve-call --mode predict --head sentiment --input '{"text": "A great film."}'
//	bertserve-call --mode stream --head sentiment --text "A great film." --text "A dull film."
//	bertserve-call --mode list-heads
//	bertserve-call --mode error    # a fill-mask text without a mask: prints the gRPC code and error details
//
// Responses are printed with protojson and the .proto field names
// (is_next_probability, token_id, ...), unset fields included. The error mode
// prints {"code", "code_name", "message", "details": [...]}, with every
// google.rpc detail the server attached (ErrorInfo, BadRequest) decoded. The
// stream mode prints {"results": [...]}: every PredictStreamResponse (id,
// head, output or error), sorted by id. The answer-spans mode prints
// {"context", "answers": [...]}: each answer with the context sliced by its
// offsets in Go's own types (see sliceAnswers).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	bertservev1 "bertserve/gen/go/bertserve/v1"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// stringList is a flag that may be given several times (--text a --text b).
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ", ") }

func (s *stringList) Set(value string) error {
	*s = append(*s, value)
	return nil
}

type options struct {
	target   string
	mode     string
	timeout  time.Duration
	token    string
	texts    stringList
	first    string
	second   string
	question string
	context  string
	topK     uint
	head     string
	input    string
}

const modes = "fill-mask, next-sentence, sentiment, answer, answer-spans, predict, stream, list-heads, error"

func parseFlags() options {
	var o options
	flag.StringVar(&o.target, "target", "localhost:50051", "server address, host:port (plaintext)")
	flag.StringVar(&o.mode, "mode", "", "what to call: "+modes)
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of the call")
	flag.StringVar(&o.token, "token", os.Getenv("BERTSERVE_TOKEN"),
		"bearer token, for a server started with tokens (default $BERTSERVE_TOKEN)")
	flag.Var(&o.texts, "text",
		"text for fill-mask (with the mask token), sentiment and stream; repeat for a batch (stream: one input each)")
	flag.StringVar(&o.first, "first", "", "first sentence, for next-sentence")
	flag.StringVar(&o.second, "second", "", "candidate next sentence, for next-sentence")
	flag.StringVar(&o.question, "question", "", "question, for answer and answer-spans")
	flag.StringVar(&o.context, "context", "", "context holding the answer, for answer and answer-spans")
	flag.UintVar(&o.topK, "top-k", 0,
		"candidates per mask (fill-mask) or answers per question (answer, answer-spans); 0: the server's default")
	flag.StringVar(&o.head, "head", "",
		"head name, for predict and stream (default sentiment), and to pick a non-default head in the typed modes")
	flag.StringVar(&o.input, "input", "", "JSON object, the head's input, for predict (and stream: sent once, instead of --text)")
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bertserve-call:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.mode == "" {
		return fmt.Errorf("--mode is required (%s)", modes)
	}
	// grpc-go 1.33 (Debian bookworm) predates credentials/insecure; WithInsecure is its plaintext option.
	conn, err := grpc.Dial(o.target, grpc.WithInsecure())
	if err != nil {
		return fmt.Errorf("cannot dial %s: %w", o.target, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if o.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+o.token)
	}

	var response proto.Message
	switch o.mode {
	case "fill-mask":
		response, err = bertservev1.NewFillMaskServiceClient(conn).FillMask(ctx, &bertservev1.FillMaskRequest{
			Texts: o.texts, TopK: uint32(o.topK), Head: o.head,
		})
	case "next-sentence":
		response, err = bertservev1.NewNextSentenceServiceClient(conn).PredictNextSentence(ctx,
			&bertservev1.PredictNextSentenceRequest{
				Pairs: []*bertservev1.SentencePair{{First: o.first, Second: o.second}}, Head: o.head,
			})
	case "sentiment":
		response, err = bertservev1.NewSentimentServiceClient(conn).ClassifySentiment(ctx,
			&bertservev1.ClassifySentimentRequest{Texts: o.texts, Head: o.head})
	case "answer":
		response, err = bertservev1.NewQuestionAnsweringServiceClient(conn).AnswerQuestion(ctx, answerRequest(o))
	case "answer-spans":
		var answered *bertservev1.AnswerQuestionResponse
		answered, err = bertservev1.NewQuestionAnsweringServiceClient(conn).AnswerQuestion(ctx, answerRequest(o))
		if err == nil {
			spans, spansErr := sliceAnswers(o.context, answered.GetResults()[0].GetAnswers())
			if spansErr != nil {
				return spansErr
			}
			return printJSON(spans)
		}
	case "predict":
		in, inputErr := parseInput(o.input)
		if inputErr != nil {
			return inputErr
		}
		response, err = bertservev1.NewInferenceServiceClient(conn).Predict(ctx,
			&bertservev1.PredictRequest{Head: o.head, Input: in})
	case "stream":
		requests, requestsErr := streamRequests(o)
		if requestsErr != nil {
			return requestsErr
		}
		var results []*bertservev1.PredictStreamResponse
		results, err = predictStream(ctx, bertservev1.NewInferenceServiceClient(conn), requests)
		if err == nil {
			return printStreamResults(results)
		}
	case "list-heads":
		response, err = bertservev1.NewModelServiceClient(conn).ListHeads(ctx, &bertservev1.ListHeadsRequest{})
	case "error":
		// A fill-mask text without a mask token: the server answers INVALID_ARGUMENT with rich details.
		_, err = bertservev1.NewFillMaskServiceClient(conn).FillMask(ctx,
			&bertservev1.FillMaskRequest{Texts: []string{"no mask"}})
		if err == nil {
			return errors.New("the server accepted a fill-mask text without a mask token")
		}
		return printJSON(describeError(err))
	default:
		return fmt.Errorf("unknown --mode %q (one of %s)", o.mode, modes)
	}
	if err != nil {
		if s, ok := status.FromError(err); ok {
			return fmt.Errorf("%s failed: %s: %s", o.mode, s.Code(), s.Message())
		}
		return fmt.Errorf("%s failed: %w", o.mode, err)
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(response)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}

func answerRequest(o options) *bertservev1.AnswerQuestionRequest {
	return &bertservev1.AnswerQuestionRequest{
		Inputs: []*bertservev1.QuestionContext{{Question: o.question, Context: o.context}},
		TopK:   uint32(o.topK),
		Head:   o.head,
	}
}

// sliceAnswers slices the context by each answer's offsets in Go's own types. A Go string is
// indexed by UTF-8 byte, so context[start_byte:end_byte] is the answer ("by_bytes"); a []rune
// is indexed by code point, so start/end slice it ("by_runes"). start/end used as string
// indices ("code_points_as_bytes") go wrong once a multi-byte character precedes or is in the
// answer: the reason start_byte and end_byte exist.
func sliceAnswers(context string, answers []*bertservev1.Answer) (map[string]interface{}, error) {
	runes := []rune(context)
	items := []interface{}{}
	for _, a := range answers {
		if a.GetStartByte() > a.GetEndByte() || int(a.GetEndByte()) > len(context) ||
			a.GetStart() > a.GetEnd() || int(a.GetEnd()) > len(runes) {
			return nil, fmt.Errorf("answer %q has offsets outside the context: %v", a.GetText(), a)
		}
		naive := ""
		if int(a.GetEnd()) <= len(context) {
			naive = context[a.GetStart():a.GetEnd()]
		}
		items = append(items, map[string]interface{}{
			"text": a.GetText(), "score": a.GetScore(), "no_answer": a.GetNoAnswer(),
			"start": a.GetStart(), "end": a.GetEnd(), "start_byte": a.GetStartByte(), "end_byte": a.GetEndByte(),
			"by_bytes":                   context[a.GetStartByte():a.GetEndByte()],
			"by_runes":                   string(runes[a.GetStart():a.GetEnd()]),
			"code_points_as_bytes":       naive,
			"code_points_as_bytes_valid": utf8.ValidString(naive),
		})
	}
	return map[string]interface{}{"context": context, "answers": items}, nil
}

// parseInput reads --input, a JSON object, as the google.protobuf.Struct of a head's input.
func parseInput(text string) (*structpb.Struct, error) {
	var input map[string]interface{}
	if err := json.Unmarshal([]byte(text), &input); err != nil {
		return nil, fmt.Errorf("--input must be a JSON object: %w", err)
	}
	in, err := structpb.NewStruct(input)
	if err != nil {
		return nil, fmt.Errorf("--input: %w", err)
	}
	return in, nil
}

// streamRequests makes the inputs of the stream mode, for --head (default sentiment): the --input
// JSON once if given, else {"text": ...} per --text; their ids are "0", "1", ...
func streamRequests(o options) ([]*bertservev1.PredictStreamRequest, error) {
	head := o.head
	if head == "" {
		head = "sentiment"
	}
	var inputs []*structpb.Struct
	if o.input != "" {
		in, err := parseInput(o.input)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, in)
	} else {
		for _, text := range o.texts {
			inputs = append(inputs, &structpb.Struct{Fields: map[string]*structpb.Value{"text": structpb.NewStringValue(text)}})
		}
	}
	if len(inputs) == 0 {
		return nil, errors.New("--mode stream needs --text (repeatable) or --input")
	}
	requests := make([]*bertservev1.PredictStreamRequest, len(inputs))
	for i, in := range inputs {
		requests[i] = &bertservev1.PredictStreamRequest{Id: strconv.Itoa(i), Head: head, Input: in}
	}
	return requests, nil
}

// predictStream sends every request over one InferenceService.PredictStream call and half-closes it,
// while a goroutine receives the results as the server sends them (in any order). It returns every
// result, or the stream's own failure (a bad input fails only its own result, in its error field).
func predictStream(ctx context.Context, client bertservev1.InferenceServiceClient,
	requests []*bertservev1.PredictStreamRequest) ([]*bertservev1.PredictStreamResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // on an early return, ends the stream and so the receiving goroutine
	stream, err := client.PredictStream(ctx)
	if err != nil {
		return nil, err
	}
	type received struct {
		results []*bertservev1.PredictStreamResponse
		err     error
	}
	done := make(chan received, 1)
	go func() {
		var results []*bertservev1.PredictStreamResponse
		for {
			result, err := stream.Recv()
			if err == io.EOF { // the server closed the stream with OK: every input is answered
				done <- received{results: results}
				return
			}
			if err != nil {
				done <- received{err: err}
				return
			}
			results = append(results, result)
		}
	}()
	for _, request := range requests {
		// io.EOF means the server ended the stream: its status comes from Recv.
		if err := stream.Send(request); err != nil {
			if err == io.EOF {
				break
			}
			return nil, err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	outcome := <-done
	if outcome.err != nil {
		return nil, outcome.err
	}
	if len(outcome.results) != len(requests) {
		return nil, fmt.Errorf("the server answered %d of %d inputs", len(outcome.results), len(requests))
	}
	return outcome.results, nil
}

// printStreamResults prints {"results": [...]}: each result as protojson (the .proto field names,
// unset fields included), sorted by id (numerically where both ids are numbers).
func printStreamResults(results []*bertservev1.PredictStreamResponse) error {
	sort.SliceStable(results, func(i, j int) bool {
		a, errA := strconv.Atoi(results[i].GetId())
		b, errB := strconv.Atoi(results[j].GetId())
		if errA == nil && errB == nil {
			return a < b
		}
		return results[i].GetId() < results[j].GetId()
	})
	marshal := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	items := make([]json.RawMessage, len(results))
	for i, result := range results {
		out, err := marshal.Marshal(result)
		if err != nil {
			return err
		}
		items[i] = out
	}
	encoder := json.NewEncoder(os.Stdout) // one line; compacts protojson's output
	encoder.SetEscapeHTML(false)
	return encoder.Encode(map[string]interface{}{"results": items})
}

// describeError turns a gRPC error into JSON: its code and message, and the
// google.rpc.Status details from the grpc-status-details-bin trailer.
func describeError(err error) map[string]interface{} {
	s := status.Convert(err)
	details := []interface{}{}
	for i, detail := range s.Details() {
		typeURL := s.Proto().GetDetails()[i].GetTypeUrl()
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			metadata := d.GetMetadata()
			if metadata == nil {
				metadata = map[string]string{}
			}
			details = append(details, map[string]interface{}{
				"type_url": typeURL, "reason": d.GetReason(), "domain": d.GetDomain(), "metadata": metadata,
			})
		case *errdetails.BadRequest:
			violations := []interface{}{}
			for _, v := range d.GetFieldViolations() {
				violations = append(violations, map[string]string{"field": v.GetField(), "description": v.GetDescription()})
			}
			details = append(details, map[string]interface{}{"type_url": typeURL, "field_violations": violations})
		case error:
			details = append(details, map[string]interface{}{"type_url": typeURL, "error": d.Error()})
		default:
			details = append(details, map[string]interface{}{"type_url": typeURL})
		}
	}
	return map[string]interface{}{
		"code":      int(s.Code()),
		"code_name": codeName(s.Code()),
		"message":   s.Message(),
		"details":   details,
	}
}

// codeName spells a code as google.rpc.Code does: "InvalidArgument" becomes "INVALID_ARGUMENT".
func codeName(code codes.Code) string {
	if code == codes.Canceled {
		return "CANCELLED"
	}
	var b strings.Builder
	previous := ' '
	for _, r := range code.String() {
		if r >= 'A' && r <= 'Z' && previous >= 'a' && previous <= 'z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
		previous = r
	}
	return strings.ToUpper(b.String())
}

func printJSON(value interface{}) error {
	out, err := json.Marshal(value)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}
