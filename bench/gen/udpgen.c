// udpgen: paced UDP/IPv4 frame generator for the capture benchmark.
// usage: udpgen IFACE DST_MAC DST_IP PORT PAYLOAD_BYTES RATE_PPS COUNT [SRC_PORT]
// Sends complete Ethernet frames on IFACE with an AF_PACKET socket
// (PACKET_QDISC_BYPASS, sendmmsg batches of BATCH): no UDP socket, routing or
// qdisc on the send side, so one core offers well over 600 kpps. Pacing is per
// batch against CLOCK_MONOTONIC. Each payload starts with a u64 sequence number.
// SRC_PORT (default 40000) marks a burst, so a capture file can be counted per burst.
// Prints "<sent> <seconds>". Traffic must only go to lab namespaces (the
// caller runs this inside one, on a veth whose peer is in another).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 128
#define HDRS 42 /* Ethernet 14 + IPv4 20 + UDP 8 */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint16_t ip_checksum(const uint8_t *h, int len) {
  uint32_t s = 0;
  for (int i = 0; i < len; i += 2) s += (h[i] << 8) | h[i + 1];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

static int parse_mac(const char *s, uint8_t *mac) {
  return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
                &mac[4], &mac[5]) == 6;
}

int main(int argc, char **argv) {
  if (argc != 8 && argc != 9) {
    fprintf(stderr,
            "usage: udpgen IFACE DST_MAC DST_IP PORT PAYLOAD_BYTES RATE_PPS COUNT [SRC_PORT]\n");
    return 2;
  }
  int size = atoi(argv[5]);
  double rate = atof(argv[6]);
  long count = atol(argv[7]);
  int src_port = argc == 9 ? atoi(argv[8]) : 40000;
  uint8_t dmac[6];
  struct in_addr dip;
  if (size < 8 || size > 8950 || rate <= 0 || count <= 0 || src_port <= 0 || src_port > 65535 || !parse_mac(argv[2], dmac) ||
      inet_pton(AF_INET, argv[3], &dip) != 1) {
    fprintf(stderr, "udpgen: bad arguments\n");
    return 2;
  }
  int fd = socket(AF_PACKET, SOCK_RAW, 0); // protocol 0: send only, never receives
  if (fd < 0) { perror("udpgen: socket(AF_PACKET)"); return 1; }
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0) {
    perror("udpgen: PACKET_QDISC_BYPASS");
  }
  int sndbuf = 16 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { perror("udpgen: SIOCGIFINDEX"); return 1; }
  int ifindex = ifr.ifr_ifindex;
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("udpgen: SIOCGIFHWADDR"); return 1; }
  uint8_t smac[6];
  memcpy(smac, ifr.ifr_hwaddr.sa_data, 6);
  struct ifreq ifa = {0};
  strncpy(ifa.ifr_name, argv[1], IFNAMSIZ - 1);
  uint32_t sip = htonl(0xc6120001); // 198.18.0.1 unless the interface has an address
  int ufd = socket(AF_INET, SOCK_DGRAM, 0);
  if (ufd >= 0 && ioctl(ufd, SIOCGIFADDR, &ifa) == 0) {
    sip = ((struct sockaddr_in *)&ifa.ifr_addr)->sin_addr.s_addr;
  }
  struct sockaddr_ll to = {
    .sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6,
    .sll_protocol = htons(ETH_P_IP)};
  memcpy(to.sll_addr, dmac, 6);

  // One template frame, copied into BATCH buffers; only the sequence number changes.
  int flen = HDRS + size;
  uint8_t tmpl[HDRS];
  memcpy(tmpl, dmac, 6);
  memcpy(tmpl + 6, smac, 6);
  tmpl[12] = 0x08, tmpl[13] = 0x00;
  uint8_t *ip = tmpl + 14;
  memset(ip, 0, 20);
  ip[0] = 0x45;
  uint16_t totlen = htons(20 + 8 + size);
  memcpy(ip + 2, &totlen, 2);
  ip[6] = 0x40; // DF
  ip[8] = 64, ip[9] = IPPROTO_UDP;
  memcpy(ip + 12, &sip, 4);
  memcpy(ip + 16, &dip.s_addr, 4);
  uint16_t ck = htons(ip_checksum(ip, 20));
  memcpy(ip + 10, &ck, 2);
  uint8_t *udp = ip + 20;
  uint16_t sport = htons(src_port), dport = htons(atoi(argv[4])), ulen = htons(8 + size);
  memcpy(udp, &sport, 2);
  memcpy(udp + 2, &dport, 2);
  memcpy(udp + 4, &ulen, 2);
  udp[6] = udp[7] = 0; // no UDP checksum

  static uint8_t frames[BATCH][9000];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    memcpy(frames[i], tmpl, HDRS);
    memset(frames[i] + HDRS, 'x', size);
    iov[i].iov_base = frames[i];
    iov[i].iov_len = flen;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &to;
    msgs[i].msg_hdr.msg_namelen = sizeof to;
  }
  uint64_t start = now_ns();
  double ns_per_pkt = 1e9 / rate;
  long sent = 0;
  while (sent < count) {
    // Pace by batch: the batch starting with packet `sent` is due at start + sent/rate.
    uint64_t due = start + (uint64_t)(sent * ns_per_pkt);
    while (now_ns() < due) {}
    int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
    for (int i = 0; i < n; i++) {
      uint64_t seq = sent + i;
      memcpy(frames[i] + HDRS, &seq, sizeof seq);
    }
    int r = sendmmsg(fd, msgs, n, 0);
    if (r < 0) continue; // ENOBUFS etc.: retry the batch
    sent += r;
  }
  double secs = (now_ns() - start) / 1e9;
  printf("%ld %.6f\n", sent, secs);
  return 0;
}
