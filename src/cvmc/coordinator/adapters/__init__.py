"""The coordinator's adapters: database, web, demand (HTCondor), catalogue, dashboard."""

import warnings

# classad2 loads htcondor2, which warns when CONDOR_CONFIG is unset: a job-ads file needs no
# HTCondor configuration, and the htcondor demand source reports a pool it cannot reach itself.
warnings.filterwarnings("ignore", message="The environment variable CONDOR_CONFIG is unset")
