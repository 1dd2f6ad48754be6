// udpgen: paced UDP sender for the capture benchmark (sendmmsg batches).
// usage: udpgen DST_IP PORT PAYLOAD_BYTES RATE_PPS COUNT
// Prints the number of packets sent. Traffic must only go to lab namespaces.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 32

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: udpgen DST_IP PORT PAYLOAD_BYTES RATE_PPS COUNT\n");
    return 2;
  }
  int size = atoi(argv[3]);
  double rate = atof(argv[4]);
  long count = atol(argv[5]);
  if (size < 8 || size > 9000 || rate <= 0 || count <= 0) {
    fprintf(stderr, "udpgen: bad arguments\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("socket"); return 1; }
  int sndbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) { fprintf(stderr, "bad ip\n"); return 2; }
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("connect"); return 1; }

  static char payload[BATCH][9000];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    memset(payload[i], 'x', size);
    iov[i].iov_base = payload[i];
    iov[i].iov_len = size;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t start = now_ns();
  long sent = 0;
  while (sent < count) {
    // Pace: the i-th packet is due at start + i/rate.
    uint64_t due = start + (uint64_t)(sent * 1e9 / rate);
    while (now_ns() < due) {}
    int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
    for (int i = 0; i < n; i++) {
      uint64_t seq = sent + i;
      memcpy(payload[i], &seq, sizeof seq); // sequence number marks each packet
    }
    int r = sendmmsg(fd, msgs, n, 0);
    if (r < 0) continue; // ENOBUFS etc.: retry
    sent += r;
  }
  double secs = (now_ns() - start) / 1e9;
  printf("%ld %.6f\n", sent, secs);
  return 0;
}
