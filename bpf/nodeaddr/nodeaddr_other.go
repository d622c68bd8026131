//go:build !linux

package nodeaddr

// Ensure reports ErrUnsupported.
func Ensure(Spec) error { return ErrUnsupported }

// Remove reports ErrUnsupported.
func Remove(string, string) error { return ErrUnsupported }

// Exists reports ErrUnsupported.
func Exists(string, string) (bool, error) { return false, ErrUnsupported }
