/*
 * mbedTLS configuration for PicoCharge's test MicroPython (Unix port, 32-bit).
 *
 * Mirrors ports/rp2/mbedtls/mbedtls_config_port.h of MicroPython 1.25: the common
 * extmod configuration (TLS 1.2 client, 16 KiB receive / 4 KiB send record buffers, the
 * same cipher suites and curves) in its bare-metal form, so every mbedTLS allocation goes
 * through m_tracked_calloc, i.e. the MicroPython heap, as on a Pico W.
 *
 * Differences from rp2, each needed because this runs on a PC, none changing what TLS
 * negotiates or how much heap it takes:
 * - time comes from the C library (rp2 reads its RTC);
 * - entropy comes from the host's platform source (rp2 samples its ring oscillator),
 *   as the Unix coverage variant does with the same bare-metal configuration;
 * - MBEDTLS_TIMING_C and CTR mode stay enabled because the Unix port's own sources
 *   use them (mbedtls_ms_time and cryptolib's CTR mode); no TLS cipher suite uses CTR.
 */
#ifndef PICOCHARGE_MBEDTLS_CONFIG_BOARD_H
#define PICOCHARGE_MBEDTLS_CONFIG_BOARD_H

#define MBEDTLS_ECP_NIST_OPTIM          /* as rp2 */
#define MBEDTLS_CIPHER_MODE_CTR         /* Unix port: cryptolib CTR */
#define MBEDTLS_TIMING_C                /* Unix port: mbedtls_ms_time */

#define MICROPY_MBEDTLS_CONFIG_BARE_METAL (1)

#include "extmod/mbedtls/mbedtls_config_common.h"

/* Keep the host's entropy source (the Unix coverage variant does the same). */
#undef MBEDTLS_ENTROPY_HARDWARE_ALT
#undef MBEDTLS_NO_PLATFORM_ENTROPY

#endif /* PICOCHARGE_MBEDTLS_CONFIG_BOARD_H */
