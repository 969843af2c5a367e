package main

import (
	"strconv"
	"strings"
	"testing"
)

// What kstatus makes of keyward's conditions, and that input it cannot read is refused
// with an error rather than a verdict.
func TestCompute(t *testing.T) {
	cases := []struct {
		name, object, status, message string
	}{
		{
			name:    "ready",
			object:  object(2, 2, `{"type":"Ready","status":"True","reason":"KeyDistributed","message":"2/2"}`),
			status:  "Current",
			message: "Resource is Ready",
		},
		{
			name: "rotating",
			object: object(2, 2,
				`{"type":"Ready","status":"True","reason":"KeyDistributed","message":"2/2"}`,
				`{"type":"Reconciling","status":"True","reason":"Staging","message":"staging version 2"}`),
			status:  "InProgress",
			message: "staging version 2",
		},
		{
			name:    "bumped, not yet seen",
			object:  object(3, 2, `{"type":"Ready","status":"True","reason":"KeyDistributed","message":"2/2"}`),
			status:  "InProgress",
			message: "EncryptionKey generation is 3, but latest observed generation is 2",
		},
		{
			name: "refused",
			object: object(1, 1,
				`{"type":"Ready","status":"False","reason":"InvalidDistribution","message":"restart must be Rolling"}`,
				`{"type":"Stalled","status":"True","reason":"InvalidDistribution","message":"restart must be Rolling"}`),
			status:  "Failed",
			message: "restart must be Rolling",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			result, err := compute(strings.NewReader(c.object))
			if err != nil {
				t.Fatal(err)
			}
			if result.Status != c.status || result.Message != c.message {
				t.Errorf("got %s %q, want %s %q", result.Status, result.Message, c.status, c.message)
			}
		})
	}
	for _, bad := range []string{"", "not json", `{"apiVersion":"keyward.io/v1alpha1"}`, strings.Repeat(" ", maxObject+1)} {
		if _, err := compute(strings.NewReader(bad)); err == nil {
			t.Errorf("%.20q: no error", bad)
		}
	}
}

// An EncryptionKey at generation, with status for observed and conditions.
func object(generation, observed int, conditions ...string) string {
	return `{"apiVersion":"keyward.io/v1alpha1","kind":"EncryptionKey",` +
		`"metadata":{"name":"apim","namespace":"apps","generation":` + strconv.Itoa(generation) + `},` +
		`"status":{"observedGeneration":` + strconv.Itoa(observed) + `,"conditions":[` +
		strings.Join(conditions, ",") + `]}}`
}
