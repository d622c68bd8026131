package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/internal/kubetest"
)

// Discovery sources.
const (
	DiscoveryKubernetes = "kubernetes"
	DiscoveryFile       = "file"
)

// KubeBinsAvailable reports whether etcd and kube-apiserver are built
// (`make kube-bins`), and where they were looked for.
func KubeBinsAvailable() (bool, string) {
	dir, err := kubetest.BinDir()
	if err != nil {
		return false, err.Error()
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false, dir
		}
	}
	return true, dir
}

// startDiscovery brings up the chosen source and publishes the endpoints.
func (c *Cluster) startDiscovery(ctx context.Context) error {
	mode := c.opts.Discovery
	have, dir := KubeBinsAvailable()
	switch mode {
	case "auto":
		mode = DiscoveryFile
		if have {
			mode = DiscoveryKubernetes
		}
	case DiscoveryKubernetes:
		if !have {
			return fmt.Errorf("cluster: discovery kubernetes needs etcd and kube-apiserver in %s: run `make kube-bins`", dir)
		}
	case DiscoveryFile:
	default:
		return fmt.Errorf("cluster: discovery %q: want auto, kubernetes or file", mode)
	}
	c.Discovery = mode
	if mode == DiscoveryFile {
		c.DiscoveryDetail = "file source (" + c.servicesFile() + "); build kube-apiserver with `make kube-bins` to use a real API server"
		return c.publishEndpoints(ctx)
	}
	c.opts.Progress("starting etcd and kube-apiserver (" + dir + ")")
	k, err := startKube(ctx, c, dir)
	if err != nil {
		return err
	}
	c.kube = k
	c.DiscoveryDetail = "kube-apiserver " + k.version + " (etcd + kube-apiserver from " + dir + "): Nodes with zone labels, Service, EndpointSlice"
	return nil
}

// SetReady marks backends ready or not (not ready also means terminating,
// as for a pod being deleted) in discovery and in the baseline's rules:
// what the endpoint controller and kube-proxy do when pods come and go.
func (c *Cluster) SetReady(ctx context.Context, ready bool, backends ...*Backend) error {
	for _, b := range backends {
		b.mu.Lock()
		b.ready = ready
		b.mu.Unlock()
	}
	if err := c.publishEndpoints(ctx); err != nil {
		return err
	}
	return c.syncBaseline()
}

func (b *Backend) isReady() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ready
}

// publishEndpoints writes the endpoints to the discovery source.
func (c *Cluster) publishEndpoints(ctx context.Context) error {
	if c.kube != nil {
		return c.kube.applyEndpoints(ctx, c)
	}
	return c.writeServicesFile()
}

func (c *Cluster) servicesFile() string { return filepath.Join(c.workDir, "services.yaml") }

// writeServicesFile writes the file source's document for the clients'
// node; the rename makes the daemon see the whole new file or the old one.
func (c *Cluster) writeServicesFile() error {
	f := discovery.File{
		Node: c.ClientNode().Name,
		Zone: ClientZone,
		Services: []discovery.FileService{{
			Namespace:  ServiceNamespace,
			Name:       ServiceName,
			ClusterIPs: []string{ServiceVIP.Addr().String()},
			Ports: []discovery.FilePort{{
				Name:        ServicePortName,
				Port:        int(ServiceVIP.Port()),
				AppProtocol: "grpc",
			}},
		}},
	}
	for _, b := range c.Backends {
		ready := b.isReady()
		f.Services[0].Ports[0].Endpoints = append(f.Services[0].Ports[0].Endpoints, discovery.FileEndpoint{
			Address:     b.Addr.String(),
			Zone:        b.Zone,
			Node:        b.Pod.Node.Name,
			Ready:       &ready,
			Serving:     &ready,
			Terminating: !ready,
		})
	}
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("cluster: encode services file: %w", err)
	}
	tmp := c.servicesFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("cluster: write services file: %w", err)
	}
	if err := os.Rename(tmp, c.servicesFile()); err != nil {
		return fmt.Errorf("cluster: replace services file: %w", err)
	}
	return nil
}
