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
//	bertserve-call --mode predict --head sentiment --input '{"text": "A great film."}'
//	bertserve-call --mode list-heads
//	bertserve-call --mode error    # a fill-mask text without a mask: prints the gRPC code and error details
//
// Responses are printed with protojson and the .proto field names
// (is_next_probability, token_id, ...), unset fields included. The error mode
// prints {"code", "code_name", "message", "details": [...]}, with every
// google.rpc detail the server attached (ErrorInfo, BadRequest) decoded.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

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

const modes = "fill-mask, next-sentence, sentiment, answer, predict, list-heads, error"

func parseFlags() options {
	var o options
	flag.StringVar(&o.target, "target", "localhost:50051", "server address, host:port (plaintext)")
	flag.StringVar(&o.mode, "mode", "", "what to call: "+modes)
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of the call")
	flag.StringVar(&o.token, "token", os.Getenv("BERTSERVE_TOKEN"),
		"bearer token, for a server started with tokens (default $BERTSERVE_TOKEN)")
	flag.Var(&o.texts, "text", "text for fill-mask (with the mask token) and sentiment; repeat for a batch")
	flag.StringVar(&o.first, "first", "", "first sentence, for next-sentence")
	flag.StringVar(&o.second, "second", "", "candidate next sentence, for next-sentence")
	flag.StringVar(&o.question, "question", "", "question, for answer")
	flag.StringVar(&o.context, "context", "", "context holding the answer, for answer")
	flag.UintVar(&o.topK, "top-k", 0, "candidates per mask (fill-mask) or answers per question (answer); 0: the server's default")
	flag.StringVar(&o.head, "head", "", "head name, for predict (and to pick a non-default head in the typed modes)")
	flag.StringVar(&o.input, "input", "", "JSON object, the head's input, for predict")
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
		response, err = bertservev1.NewQuestionAnsweringServiceClient(conn).AnswerQuestion(ctx,
			&bertservev1.AnswerQuestionRequest{
				Inputs: []*bertservev1.QuestionContext{{Question: o.question, Context: o.context}},
				TopK:   uint32(o.topK),
				Head:   o.head,
			})
	case "predict":
		var input map[string]interface{}
		if err := json.Unmarshal([]byte(o.input), &input); err != nil {
			return fmt.Errorf("--input must be a JSON object: %w", err)
		}
		in, structErr := structpb.NewStruct(input)
		if structErr != nil {
			return fmt.Errorf("--input: %w", structErr)
		}
		response, err = bertservev1.NewInferenceServiceClient(conn).Predict(ctx,
			&bertservev1.PredictRequest{Head: o.head, Input: in})
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
