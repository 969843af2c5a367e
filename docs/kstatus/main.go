// Command kstatus prints what cli-utils' kstatus — the library Flux, kpt and
// `cli-utils` apply decide health with — makes of one Kubernetes object: it reads the
// object as JSON on stdin and writes {"status": …, "message": …} as JSON on stdout.
// keyward's integration tests run it on live EncryptionKeys and OAuthClients.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// maxObject bounds what is read from stdin: far above any object the API server stores.
const maxObject = 8 << 20

// Result is what kstatus decided.
type Result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// compute reads one object as JSON from input and returns kstatus' verdict on it.
func compute(input io.Reader) (Result, error) {
	text, err := io.ReadAll(io.LimitReader(input, maxObject+1))
	if err != nil {
		return Result{}, fmt.Errorf("reading the object: %w", err)
	}
	if len(text) > maxObject {
		return Result{}, fmt.Errorf("the object is larger than %d bytes", maxObject)
	}
	var object unstructured.Unstructured
	if err := object.UnmarshalJSON(text); err != nil {
		return Result{}, fmt.Errorf("the object is not a Kubernetes object in JSON: %w", err)
	}
	result, err := status.Compute(&object)
	if err != nil {
		return Result{}, fmt.Errorf("computing its status: %w", err)
	}
	return Result{Status: result.Status.String(), Message: result.Message}, nil
}

func main() {
	result, err := compute(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
