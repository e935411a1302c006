// cri-run: the smallest CRI client tests/nri/real-containerd.sh needs (no crictl in Debian):
// it runs one pod sandbox with Kubernetes metadata and host networking, creates and starts one
// container in it, waits for the container to exit, then removes the pod. The container gets
// /out bind-mounted from OUT_DIR.
//
//	cri-run SOCKET IMAGE OUT_DIR NAMESPACE NAME UID -- COMMAND...
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) < 9 || os.Args[7] != "--" {
		fmt.Fprintln(os.Stderr, "usage: cri-run SOCKET IMAGE OUT_DIR NAMESPACE NAME UID -- COMMAND...")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6], os.Args[8:]); err != nil {
		fmt.Fprintln(os.Stderr, "cri-run:", err)
		os.Exit(1)
	}
}

func run(socket, image, out, ns, name, uid string, command []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	logs, err := os.MkdirTemp("", "cri-run-logs")
	if err != nil {
		return err
	}
	sandbox := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: uid, Namespace: ns},
		LogDirectory: logs,
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	pod, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sandbox})
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w", err)
	}
	defer func() {
		_, _ = rt.StopPodSandbox(context.Background(), &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		_, _ = rt.RemovePodSandbox(context.Background(), &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	}()
	ctr, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "main"},
			Image:    &cri.ImageSpec{Image: image},
			Command:  command,
			LogPath:  "main.log",
			Mounts:   []*cri.Mount{{ContainerPath: "/out", HostPath: out}},
		},
		SandboxConfig: sandbox,
	})
	if err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	fmt.Println("container", ctr.ContainerId)
	if _, err := rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return fmt.Errorf("StartContainer: %w", err)
	}
	for {
		st, err := rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: ctr.ContainerId})
		if err != nil {
			return fmt.Errorf("ContainerStatus: %w", err)
		}
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			if st.Status.ExitCode != 0 {
				return fmt.Errorf("container exited with %d", st.Status.ExitCode)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
