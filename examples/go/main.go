// Command switchyard-example calls a Switchyard gateway from Go with stubs
// generated from protos/switchyard/v1 (protoc-gen-go, protoc-gen-go-grpc).
//
// It lists the routes, classifies one held-out digit with Gateway.Infer and
// checks the label, pipelines 100 requests on one InferStream, sends a bad
// input and checks that it is INVALID_ARGUMENT, then submits the digit as a
// job (Jobs.SubmitJob) and follows it with Jobs.WatchJob until it succeeds.
// It prints one line per step and exits 1 at the first step that fails.
//
//	switchyard-example -target localhost:8500 -digit digit.json
//
// digit.json holds {"pixels": [64 numbers, 0..16], "label": N}.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "switchyard/v1"
)

const streamRequests = 100

type digit struct {
	Pixels []float32 `json:"pixels"`
	Label  int64     `json:"label"`
}

func main() {
	target := flag.String("target", "localhost:8500", "gateway address host:port")
	digitFile := flag.String("digit", "digit.json", `JSON file {"pixels": [64 numbers], "label": N}`)
	apiKey := flag.String("api-key", os.Getenv("SWITCHYARD_API_KEY"), "API key, sent as 'authorization: Bearer <key>'")
	flag.Parse()
	if err := run(*target, *digitFile, *apiKey); err != nil {
		fmt.Fprintln(os.Stderr, "go client: error:", err)
		os.Exit(1)
	}
}

func run(target, digitFile, apiKey string) error {
	data, err := os.ReadFile(digitFile)
	if err != nil {
		return err
	}
	var d digit
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("%s: %w", digitFile, err)
	}
	if len(d.Pixels) != 64 {
		return fmt.Errorf("%s: %d pixels, want 64", digitFile, len(d.Pixels))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	}
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("connect %s: %w", target, err)
	}
	defer conn.Close()
	gateway := pb.NewGatewayClient(conn)
	jobs := pb.NewJobsClient(conn)

	// ListRoutes
	routes, err := gateway.ListRoutes(ctx, &pb.ListRoutesRequest{})
	if err != nil {
		return fmt.Errorf("ListRoutes: %w", err)
	}
	names := []string{}
	for _, route := range routes.Routes {
		names = append(names, route.Name)
	}
	if !contains(names, "digits") {
		return fmt.Errorf("ListRoutes: no route 'digits' in %v", names)
	}
	fmt.Printf("go client: ListRoutes: %d routes: %s\n", len(names), strings.Join(names, ","))

	// Infer on one held-out digit
	answer, err := gateway.Infer(ctx, digitRequest(d.Pixels, "go-infer"))
	if err != nil {
		return fmt.Errorf("Infer: %w", err)
	}
	label, err := labelOf(answer)
	if err != nil {
		return err
	}
	if label != d.Label {
		return fmt.Errorf("Infer: label %d, the digit is a %d", label, d.Label)
	}
	fmt.Printf("go client: Infer: label %d (expected %d), request_id %s\n", label, d.Label, answer.RequestId)

	// InferStream: 100 requests pipelined on one stream
	if err := inferStream(ctx, gateway, d); err != nil {
		return err
	}

	// A bad input: 63 pixels where the route takes 64
	bad := digitRequest(d.Pixels[:63], "go-bad")
	_, err = gateway.Infer(ctx, bad)
	if status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("bad input: got %v, want INVALID_ARGUMENT", err)
	}
	fmt.Printf("go client: bad input: %s: %s\n", strings.ToUpper(toSnake(status.Code(err).String())), status.Convert(err).Message())

	// A job: submit, then watch until it ends
	submitted, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{Request: digitRequest(d.Pixels, "go-job")})
	if err != nil {
		return fmt.Errorf("SubmitJob: %w", err)
	}
	watch, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: submitted.JobId})
	if err != nil {
		return fmt.Errorf("WatchJob: %w", err)
	}
	states := []string{}
	var last *pb.Job
	for {
		job, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("WatchJob: %w", err)
		}
		states = append(states, job.State.String())
		last = job
	}
	if last == nil || last.State != pb.JobState_JOB_STATE_SUCCEEDED {
		return fmt.Errorf("job %s: states %v, want it to end SUCCEEDED", submitted.JobId, states)
	}
	label, err = labelOf(last.Response)
	if err != nil {
		return err
	}
	if label != d.Label {
		return fmt.Errorf("job %s: label %d, the digit is a %d", submitted.JobId, label, d.Label)
	}
	fmt.Printf("go client: job %s: %s, label %d\n", submitted.JobId, strings.Join(states, " -> "), label)
	return nil
}

func inferStream(ctx context.Context, gateway pb.GatewayClient, d digit) error {
	stream, err := gateway.InferStream(ctx)
	if err != nil {
		return fmt.Errorf("InferStream: %w", err)
	}
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < streamRequests; i++ {
			if err := stream.Send(digitRequest(d.Pixels, fmt.Sprintf("go-stream-%d", i))); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseSend()
	}()
	answered := map[string]bool{}
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("InferStream: %w", err)
		}
		if failure := message.GetError(); failure != nil {
			return fmt.Errorf("InferStream: request %s failed: %s", message.RequestId, failure.Message)
		}
		label, err := labelOf(message.GetResponse())
		if err != nil {
			return err
		}
		if label != d.Label {
			return fmt.Errorf("InferStream: request %s: label %d, the digit is a %d", message.RequestId, label, d.Label)
		}
		answered[message.RequestId] = true
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("InferStream: send: %w", err)
	}
	if len(answered) != streamRequests {
		return fmt.Errorf("InferStream: %d answers for %d requests", len(answered), streamRequests)
	}
	fmt.Printf("go client: InferStream: %d/%d answered, every label %d\n", len(answered), streamRequests, d.Label)
	return nil
}

// digitRequest is one request on route digits: an FP32 tensor [1, len(pixels)], little-endian.
func digitRequest(pixels []float32, id string) *pb.InferRequest {
	raw := make([]byte, 4*len(pixels))
	for i, value := range pixels {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(value))
	}
	image := &pb.Tensor{Name: "image", Datatype: "FP32", Shape: []int64{1, int64(len(pixels))}, RawData: raw}
	return &pb.InferRequest{Route: "digits", RequestId: id, Inputs: []*pb.Tensor{image}}
}

// labelOf reads the INT64 output "label" of a one-row answer.
func labelOf(answer *pb.InferResponse) (int64, error) {
	for _, tensor := range answer.GetOutputs() {
		if tensor.Name == "label" {
			if tensor.Datatype != "INT64" || len(tensor.RawData) != 8 {
				return 0, fmt.Errorf("label: %s with %d bytes, want one INT64", tensor.Datatype, len(tensor.RawData))
			}
			return int64(binary.LittleEndian.Uint64(tensor.RawData)), nil
		}
	}
	return 0, fmt.Errorf("answer has no output 'label'")
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// toSnake turns a Go code name (InvalidArgument) into the gRPC one (invalid_argument).
func toSnake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}
