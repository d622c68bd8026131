package runner

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// writeProtoset writes the descriptors of grpc.testing.TestService and
// everything it imports, dependencies first, as a FileDescriptorSet for ghz's
// --protoset. Giving ghz the schema spares a reflection stream through every
// proxy before each run, so the proxies carry only the measured calls.
func writeProtoset(path string) error {
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(testgrpc.File_grpc_testing_test_proto)
	b, err := proto.Marshal(&set)
	if err != nil {
		return fmt.Errorf("marshal protoset: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write protoset: %w", err)
	}
	return nil
}

// writeCallData writes ghz's request: a SimpleRequest asking for a
// PayloadSize response and carrying a PayloadSize body.
func writeCallData(path string) error {
	req := map[string]any{
		"response_size": PayloadSize,
		"payload":       map[string]string{"body": base64.StdEncoding.EncodeToString(make([]byte, PayloadSize))},
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode call data: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write call data: %w", err)
	}
	return nil
}
