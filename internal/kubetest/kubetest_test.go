package kubetest

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestStartRestart checks the helper itself: the server answers, keeps its
// data across a restart of kube-apiserver, and enforces RBAC when asked.
func TestStartRestart(t *testing.T) {
	s := Start(t, Options{Authorization: "RBAC"})
	client := s.Client(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubetest"}}
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}

	s.RestartAPIServer(t)
	if _, err := client.CoreV1().Namespaces().Get(t.Context(), "kubetest", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace lost across a restart: %v", err)
	}

	sa, err := kubernetes.NewForConfig(s.ImpersonateServiceAccount("kubetest", "nobody"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().Services("kubetest").List(t.Context(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("list services as a ServiceAccount with no role: err = %v, want forbidden", err)
	}
}
