/*
 * Sandbox ("pause") process of the herdwatch e2e cluster's pods. It holds the pod's
 * namespaces open and does nothing else: it waits for signals, reaps children that are
 * re-parented to it (it is PID 1 when the pod shares its PID namespace), and exits on
 * SIGINT or SIGTERM. Built static, so the image needs no other file.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 1); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigemptyset(&stop.sa_mask);
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGINT, &stop, NULL) || sigaction(SIGTERM, &stop, NULL) ||
      sigaction(SIGCHLD, &child, NULL))
    return 2;
  for (;;)
    pause();
}
