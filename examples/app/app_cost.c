/* app_cost.c - FIFO admission gate and CPU-burning workers for request cost (see app_cost.h). */
#include "app_cost.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct cost {
    long limit; /* slots; 0 = unlimited, the gate is skipped */
    uint64_t cpu_ns;
    cost_ready_fn *ready;
    void *arg;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* work for the workers, or stop */
    long in_use;
    int waiting;
    cost_job_t *wait_head, *wait_tail; /* jobs waiting for a slot, oldest first */
    cost_job_t *run_head, *run_tail;   /* jobs with a slot waiting for a worker */
    bool stop;

    int nworkers;
    pthread_t *workers;
};

static void s_push(cost_job_t **head, cost_job_t **tail, cost_job_t *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static cost_job_t *s_pop(cost_job_t **head, cost_job_t **tail)
{
    cost_job_t *job = *head;
    if (job) {
        *head = job->next;
        if (!*head)
            *tail = NULL;
        job->next = NULL;
    }
    return job;
}

__attribute__((noinline)) void sample_request_work(uint64_t ns)
{
    cost_burn(ns);
}

static void *s_worker(void *arg)
{
    cost_t *self = arg;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->stop && !self->run_head)
            pthread_cond_wait(&self->cv, &self->mu);
        if (self->stop)
            break;
        cost_job_t *job = s_pop(&self->run_head, &self->run_tail);
        pthread_mutex_unlock(&self->mu);
        sample_request_work(self->cpu_ns);
        self->ready(job, self->arg);
        pthread_mutex_lock(&self->mu);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

/* Sends a job that holds a slot on to its CPU, or straight to ready when there is none. */
static void s_run(cost_t *self, cost_job_t *job)
{
    if (self->cpu_ns == 0) {
        self->ready(job, self->arg);
        return;
    }
    pthread_mutex_lock(&self->mu);
    s_push(&self->run_head, &self->run_tail, job);
    pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
}

cost_t *cost_new(long concurrency, long cpu_us, int workers, cost_ready_fn *ready, void *arg)
{
    cost_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->limit = concurrency;
    self->cpu_ns = (uint64_t)cpu_us * 1000u;
    self->ready = ready;
    self->arg = arg;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    if (self->cpu_ns == 0)
        return self;

    self->workers = calloc((size_t)workers, sizeof *self->workers);
    if (!self->workers) {
        cost_destroy(&self);
        errno = ENOMEM;
        return NULL;
    }
    for (int i = 0; i < workers; i++) {
        int rc = pthread_create(&self->workers[i], NULL, s_worker, self);
        if (rc != 0) {
            cost_destroy(&self);
            errno = rc;
            return NULL;
        }
        self->nworkers++;
    }
    return self;
}

void cost_stop(cost_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->stop = true;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    for (int i = 0; i < self->nworkers; i++)
        pthread_join(self->workers[i], NULL);
    self->nworkers = 0;
}

void cost_destroy(cost_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cost_t *self = *self_p;
    cost_stop(self);
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self->workers);
    free(self);
    *self_p = NULL;
}

void cost_submit(cost_t *self, cost_job_t *job)
{
    if (self->limit > 0) {
        pthread_mutex_lock(&self->mu);
        bool granted = self->in_use < self->limit;
        if (granted) {
            self->in_use++;
        } else {
            s_push(&self->wait_head, &self->wait_tail, job);
            self->waiting++;
        }
        pthread_mutex_unlock(&self->mu);
        if (!granted)
            return;
    }
    s_run(self, job);
}

void cost_release(cost_t *self)
{
    if (self->limit == 0)
        return;
    pthread_mutex_lock(&self->mu);
    /* The slot passes straight to the oldest waiter, so a newcomer cannot overtake it. */
    cost_job_t *next = s_pop(&self->wait_head, &self->wait_tail);
    if (next)
        self->waiting--;
    else
        self->in_use--;
    pthread_mutex_unlock(&self->mu);
    if (next)
        s_run(self, next);
}

int cost_waiting(cost_t *self)
{
    pthread_mutex_lock(&self->mu);
    int n = self->waiting;
    pthread_mutex_unlock(&self->mu);
    return n;
}
