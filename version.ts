/** Release version of the pcap executable, shown by `pcap version` and sent in HELLO frames. */
export const VERSION = "0.1.0";
