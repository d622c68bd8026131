package discovery

import "strings"

// EnabledKey is the annotation (on a Service) and label (on a Namespace)
// that opts Services in to zonelb, or out of it: "true" or "false".
const EnabledKey = "zonelb.io/enabled"

// SpillBudgetKey is the annotation on a Service that overrides the
// daemon's spill budget for it: a percentage ("80%"), "parity" or
// "latency" (see zone.ParseSpillBudget). A value that does not parse is
// ignored, with a warning naming the Service.
const SpillBudgetKey = "zonelb.io/spill-budget"

// The appProtocol values that mean "HTTP/2 in cleartext": a port declaring
// one is taken over without any opt-in. Compared case-insensitively.
var http2AppProtocols = []string{"grpc", "h2c", "kubernetes.io/h2c"}

// IsHTTP2AppProtocol reports whether appProtocol declares cleartext HTTP/2
// (grpc, h2c, kubernetes.io/h2c, any case): the proxy serves such a port as
// HTTP/2 only, refusing connections that do not start with the preface.
func IsHTTP2AppProtocol(appProtocol string) bool {
	for _, p := range http2AppProtocols {
		if strings.EqualFold(appProtocol, p) {
			return true
		}
	}
	return false
}

// optSwitch is the value of an EnabledKey annotation or label.
type optSwitch uint8

const (
	optUnset   optSwitch = iota // absent
	optIn                       // "true"
	optOut                      // "false"
	optInvalid                  // present but neither: ignored, and warned about
)

func parseOptSwitch(values map[string]string) optSwitch {
	v, ok := values[EnabledKey]
	switch {
	case !ok:
		return optUnset
	case v == "true":
		return optIn
	case v == "false":
		return optOut
	}
	return optInvalid
}

// selectPort decides whether zonelb takes over one service port, and says
// why in the form shown by /debug/state. The rules, in order:
//
//  1. only TCP ports (protocol "" means TCP);
//  2. an opt-out ("false") on the Service or its Namespace wins over
//     everything else;
//  3. an appProtocol of grpc, h2c or kubernetes.io/h2c selects the port;
//  4. an opt-in annotation on the Service selects all its TCP ports;
//  5. an opt-in label on the Namespace selects all TCP ports of its
//     Services.
func selectPort(namespace, service optSwitch, protocol, appProtocol string) (selected bool, why string) {
	if protocol != "" && protocol != "TCP" {
		return false, ""
	}
	if service == optOut || namespace == optOut {
		return false, ""
	}
	if IsHTTP2AppProtocol(appProtocol) {
		return true, "appProtocol " + appProtocol
	}
	if service == optIn {
		return true, "annotation " + EnabledKey + "=true"
	}
	if namespace == optIn {
		return true, "namespace label " + EnabledKey + "=true"
	}
	return false, ""
}
