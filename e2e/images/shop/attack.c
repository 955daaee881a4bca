/* What an intruder brings along into the shop's container, for what busybox cannot do:
 *   attack memfd-exec      run busybox `true` from an anonymous memory file (no path on disk)
 *   attack ptrace PID      attach to another process of the container
 *   attack keyctl          ask the kernel keyring for the session key
 * Each prints what the kernel said and exits 0: the attack suite judges what herdwatch saw,
 * not whether the attack worked. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int memfd_exec(void) {
  int fd = memfd_create("payload", 0);
  if (fd < 0) { perror("memfd_create"); return 0; }
  int src = open("/bin/busybox", O_RDONLY);
  if (src < 0) { perror("open /bin/busybox"); return 0; }
  char buf[65536];
  ssize_t n;
  while ((n = read(src, buf, sizeof buf)) > 0) {
    if (write(fd, buf, (size_t)n) != n) { perror("write"); return 0; }
  }
  close(src);
  char *argv[] = {"true", NULL};
  char *envp[] = {NULL};
  fexecve(fd, argv, envp);
  perror("fexecve");
  return 0;
}

static int attach(const char *pid) {
  pid_t target = (pid_t)atoi(pid);
  if (ptrace(PTRACE_ATTACH, target, NULL, NULL) != 0) {
    printf("ptrace attach %d: %s\n", target, strerror(errno));
    return 0;
  }
  waitpid(target, NULL, 0);
  ptrace(PTRACE_DETACH, target, NULL, NULL);
  printf("ptrace attach %d: attached and detached\n", target);
  return 0;
}

static int keyring(void) {
  /* KEYCTL_GET_KEYRING_ID (0) of the session keyring (-3), without creating it. */
  long id = syscall(SYS_keyctl, 0, -3, 0);
  printf("keyctl: %ld (%s)\n", id, id < 0 ? strerror(errno) : "ok");
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "memfd-exec") == 0) return memfd_exec();
  if (argc >= 3 && strcmp(argv[1], "ptrace") == 0) return attach(argv[2]);
  if (argc >= 2 && strcmp(argv[1], "keyctl") == 0) return keyring();
  fprintf(stderr, "usage: attack memfd-exec | ptrace PID | keyctl\n");
  return 2;
}
