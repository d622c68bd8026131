package grpccode

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// The numbers and names agree with grpc-go's, code by code.
func TestCodesMatchGRPC(t *testing.T) {
	for c := OK; c <= Unauthenticated; c++ {
		var g codes.Code
		if err := g.UnmarshalJSON([]byte(`"` + c.String() + `"`)); err != nil {
			t.Fatalf("%d: grpc-go does not know the name %q: %v", c, c.String(), err)
		}
		if int(g) != int(c) {
			t.Errorf("%s is %d here, %d in grpc-go", c, c, g)
		}
	}
	if got := Code(42).String(); got != "42" {
		t.Errorf("an undefined code is named %q, want its number", got)
	}
}
