/* main.c - tide-metrics: windows over the proxies' stats, metrics.snapshot, Prometheus. */
#include "service.h"
#include "tide_config.h"
#include "tide_log.h"
#include "tide_msg.h"

int main(int argc, char **argv)
{
    tide_config_t cfg;
    char id[128];
    config_from_args(argc, argv, "tide-metrics", &cfg, id, sizeof id);
    log_init("metrics", LOGL_INFO);
    msg_sender_t sender;
    msg_sender_init(&sender, "metrics", id);
    return service_run(&cfg, &sender);
}
